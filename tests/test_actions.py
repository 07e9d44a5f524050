"""Action layer: real rasa-sdk trackers and CollectingDispatcher over the real core."""

from __future__ import annotations

import asyncio

import pytest
from rasa_sdk import Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import ActionExecutor, CollectingDispatcher

from actions.actions import ActionAnswerRecommendation, ActionListRecommendations, ActionLookupRecommendation
from assistant import answer
from assistant.dialogue import SLOTS


def tracker(text: str, intent: str, slots: dict | None = None) -> Tracker:
    return Tracker(sender_id="clinician-1", slots={s: None for s in SLOTS} | (slots or {}),
                   latest_message={"text": text, "intent": {"name": intent, "confidence": 0.95}, "entities": []},
                   events=[], paused=False, followup_action=None, active_loop={}, latest_action_name="action_listen")


def run(action, track: Tracker) -> tuple:
    dispatcher = CollectingDispatcher()
    events = asyncio.run(action.run(dispatcher, track, {}))
    return dispatcher.messages, events


def slots_after(before: dict, events: list) -> dict:
    out = dict(before)
    out.update({e["name"]: e["value"] for e in events if e["event"] == "slot"})
    return out


def test_action_names_match_domain():
    assert ActionAnswerRecommendation().name() == "action_answer_recommendation"
    assert ActionLookupRecommendation().name() == "action_lookup_recommendation"
    assert ActionListRecommendations().name() == "action_list_recommendations"


def test_rasa_sdk_registers_only_the_concrete_actions():
    executor = ActionExecutor()
    executor.register_package("actions")
    assert set(executor.actions) == {"action_answer_recommendation", "action_lookup_recommendation",
                                     "action_list_recommendations"}


def test_lookup_sends_exact_text_payload_and_sets_slots(assistant, corpus_by_id):
    rec = corpus_by_id["1.5.16"]
    messages, events = run(ActionLookupRecommendation(assistant), tracker("show 1.5.16", "lookup_recommendation"))
    item = answer.answer_item(rec, 1.0)
    assert messages == [{
        "text": "NICE CG81 recommendation 1.5.16 [2009] — section 1.5 Managing complications › Bone metastases\n"
                + rec["text"],
        "buttons": [], "elements": [], "custom": {**answer.payload([item]), "provenance": assistant.provenance},
        "template": None, "response": None,
        "image": None, "attachment": None}]
    # The looked-up recommendation becomes the topic, as concepts by role, so "who does that?" can follow.
    assert events == [SlotSet("topic", {"problem": ["bone_metastases", "pain"],
                                        "intervention": ["radiotherapy", "single_fraction"]}),
                      SlotSet("last_answer_ids", ["1.5.16"])]


def test_question_answer_payload_is_verbatim(assistant, corpus_by_id):
    messages, events = run(ActionAnswerRecommendation(assistant),
                           tracker("should I monitor with PET-CT?", "ask_guideline"))
    [message] = messages
    payload = message["custom"]
    assert payload["type"] == "guideline_answer" and payload["abstained"] is False
    assert payload["answers"][0]["id"] == "1.1.8"
    assert all(a["text"] == corpus_by_id[a["id"]]["text"] for a in payload["answers"])
    assert message["text"].startswith("NICE CG81 recommendation 1.1.8 [2009] — section 1.1 Diagnosis and assessment")
    assert corpus_by_id["1.1.8"]["text"] in message["text"]
    assert SlotSet("last_answer_ids", [a["id"] for a in payload["answers"]]) in events
    assert SlotSet("topic", {"intervention": ["pet_ct"], "aspect": ["monitoring"]}) in events


def test_clarification_then_button_answer_through_slots(assistant):
    action = ActionAnswerRecommendation(assistant)
    first = tracker("which endocrine therapy for ER+ advanced breast cancer?", "ask_guideline")
    messages, events = run(action, first)
    [message] = messages
    assert message["custom"]["clarification"]["options"] == [
        "Postmenopausal woman", "Premenopausal or perimenopausal woman", "Man"]
    assert [b["title"] for b in message["buttons"]] == message["custom"]["clarification"]["options"]
    assert {"1.3.4", "1.3.5", "1.3.7"} <= {a["id"] for a in message["custom"]["answers"]}
    assert SlotSet("pending_clarification", "endocrine_patient_group") in events

    slots = slots_after(first.slots, events)
    messages, events = run(action, tracker("Postmenopausal woman", "clarify", slots))
    assert messages[0]["custom"]["answers"][0]["id"] == "1.3.4"
    assert messages[0]["custom"]["clarification"] is None
    assert SlotSet("pending_clarification", None) in events
    assert SlotSet("menopausal_status", "postmenopausal") in events


def test_follow_up_resolves_against_previous_question(assistant):
    action = ActionAnswerRecommendation(assistant)
    first = tracker("first line endocrine therapy for a postmenopausal woman with ER+ MBC", "ask_guideline")
    _, events = run(action, first)
    messages, events = run(action, tracker("and for men?", "follow_up", slots_after(first.slots, events)))
    assert messages[0]["custom"]["answers"][0]["id"] == "1.3.7"
    assert SlotSet("sex", "male") in events and SlotSet("menopausal_status", None) in events


def test_out_of_scope_abstains_and_keeps_context(assistant):
    slots = {"topic": {"problem": ["bone_metastases"], "intervention": ["imaging"]}, "last_answer_ids": ["1.1.2"]}
    messages, events = run(ActionAnswerRecommendation(assistant), tracker("what dose of letrozole?", "out_of_scope",
                                                                          slots))
    [message] = messages
    assert message["custom"] == {**answer.abstention_payload("out_of_scope:oos_dosing"),
                                 "provenance": assistant.provenance}
    assert message["text"].startswith("NICE CG81 has no recommendation on doses or dosing schedules")
    assert events == []


def test_list_action(assistant):
    messages, _ = run(ActionListRecommendations(assistant), tracker("list section 1.2", "list_recommendations"))
    assert [a["id"] for a in messages[0]["custom"]["answers"]] == ["1.2.1", "1.2.2", "1.2.3", "1.2.4"]


@pytest.mark.parametrize("text", ["", "   ", "\x00\x01"])
def test_empty_input_gets_a_clear_message_and_no_payload(assistant, text):
    messages, events = run(ActionAnswerRecommendation(assistant), tracker(text, "nlu_fallback"))
    assert messages[0]["text"] == answer.EMPTY_MESSAGE and messages[0]["custom"] == {}
    assert events == []


class _BrokenCore:
    """Fault injection: the core raising must give the clinician a message, not silence."""

    def respond(self, *args, **kwargs):
        raise RuntimeError("index unavailable")


def test_core_failure_gives_friendly_message():
    messages, events = run(ActionAnswerRecommendation(_BrokenCore()), tracker("bone mets imaging", "ask_guideline"))
    assert messages == [{"text": None, "buttons": [], "elements": [],
                         "custom": answer.abstention_payload("service_error"), "template": "utter_service_unavailable",
                         "response": "utter_service_unavailable", "image": None, "attachment": None}]
    assert events == []


def test_domain_failure_text_matches_the_channel_text():
    import yaml

    from assistant import config

    domain = yaml.safe_load((config.ROOT / "domain.yml").read_text(encoding="utf-8"))
    assert domain["responses"]["utter_service_unavailable"] == [{"text": answer.SERVICE_UNAVAILABLE}]
