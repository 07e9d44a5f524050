"""Thin rasa-sdk actions over the core: the retrieval and dialogue logic live in `assistant/`."""

from __future__ import annotations

import logging
from abc import ABCMeta, abstractmethod
from typing import Any, Dict, List

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from assistant import answer
from assistant.dialogue import SLOTS
from assistant.service import shared_assistant

log = logging.getLogger(__name__)


class _GuidelineAction(Action, metaclass=ABCMeta):
    """Reads the latest message, intent and slots; replies with corpus text and the JSON payload.
    Abstract, so rasa-sdk registers only the concrete actions below."""

    intent_hint: str | None = None

    def __init__(self, assistant=None) -> None:
        self._assistant = assistant  # injected in tests; the shared core otherwise

    @abstractmethod
    def name(self) -> str:
        """The action name in domain.yml."""

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[str, Any]) -> List[Dict[str, Any]]:
        state = {slot: tracker.get_slot(slot) for slot in SLOTS}
        intent = self.intent_hint or (tracker.latest_message.get("intent") or {}).get("name")
        try:
            assistant = self._assistant or shared_assistant()
            reply = assistant.respond(tracker.latest_message.get("text") or "", state, intent=intent)
        except Exception:  # noqa: BLE001 - a clinician gets a clear message, never silence
            log.exception("guideline core failed")
            dispatcher.utter_message(response="utter_service_unavailable",
                                     json_message=answer.abstention_payload("service_error"))
            return []
        dispatcher.utter_message(text=reply.text, buttons=reply.buttons or None, json_message=reply.payload)
        return [SlotSet(slot, reply.state.get(slot)) for slot in SLOTS if reply.state.get(slot) != state.get(slot)]


class ActionAnswerRecommendation(_GuidelineAction):
    def name(self) -> str:
        return "action_answer_recommendation"


class ActionLookupRecommendation(_GuidelineAction):
    intent_hint = "lookup_recommendation"

    def name(self) -> str:
        return "action_lookup_recommendation"


class ActionListRecommendations(_GuidelineAction):
    intent_hint = "list_recommendations"

    def name(self) -> str:
        return "action_list_recommendations"
