"""Rasa NLU component that runs the CG81 lexicon entity extractor (blank spaCy, no downloaded model)."""

from __future__ import annotations

from typing import Any, Dict, List

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.extractors.extractor import EntityExtractorMixin
from rasa.shared.nlu.constants import ENTITIES, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData


def to_rasa_entities(entities: list) -> List[Dict[str, Any]]:
    """Lexicon spans → Rasa entity dicts: entity = label in lower case, value = canonical concept id."""
    return [{"start": e.start, "end": e.end, "value": e.value, "entity": e.label.lower(), "text": e.text,
             "confidence_entity": 1.0} for e in entities]


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.ENTITY_EXTRACTOR], is_trainable=False)
class LexiconEntityExtractor(GraphComponent, EntityExtractorMixin):
    """Emits the lexicon's concepts as entities; the same code the action server's core uses."""

    @staticmethod
    def get_default_config() -> Dict[str, Any]:
        return {"lexicon_path": None, "fuzzy": True}

    def __init__(self, config: Dict[str, Any]) -> None:
        self._config = config
        self._extractor = None

    @classmethod
    def create(cls, config: Dict[str, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> LexiconEntityExtractor:
        return cls(config)

    @property
    def extractor(self):
        if self._extractor is None:  # built on first use, not at import
            from assistant.entities import EntityExtractor

            self._extractor = EntityExtractor(self._config.get("lexicon_path"), self._config.get("fuzzy", True))
        return self._extractor

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            text = message.get(TEXT)
            if not text:
                continue
            found = self.add_extractor_name(to_rasa_entities(self.extractor.extract(text)))
            message.set(ENTITIES, message.get(ENTITIES, []) + found, add_to_output=True)
        return messages

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        return training_data

    @classmethod
    def validate_config(cls, config: Dict[str, Any]) -> None:
        path: str | None = config.get("lexicon_path")
        if path is not None and not isinstance(path, str):
            raise ValueError("lexicon_path must be a string path")


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER], is_trainable=False)
class ClinicalIntentGuard(GraphComponent):
    """A message that names clinical concepts is a guideline question, whatever small-talk intent the
    classifier saw in it ("hi, imaging for bone mets?", "thanks - and for men?"): it goes to the answer
    action, whose core then answers, clarifies or abstains. Runs after the classifiers."""

    @staticmethod
    def get_default_config() -> Dict[str, Any]:
        return {"small_talk_intents": ["greet", "goodbye", "thanks", "help", "bot_challenge"],
                "question_intent": "ask_guideline",
                "ignored_entities": ["condition", "out_of_scope"]}

    def __init__(self, config: Dict[str, Any]) -> None:
        self._config = config

    @classmethod
    def create(cls, config: Dict[str, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> ClinicalIntentGuard:
        return cls(config)

    def process(self, messages: List[Message]) -> List[Message]:
        ignored = set(self._config["ignored_entities"])
        for message in messages:
            intent = message.get("intent") or {}
            if intent.get("name") not in self._config["small_talk_intents"]:
                continue
            if any(e.get("entity") not in ignored for e in message.get(ENTITIES, [])
                   if e.get("extractor") == LexiconEntityExtractor.__name__):
                message.set("intent", {"name": self._config["question_intent"],
                                       "confidence": intent.get("confidence", 1.0)}, add_to_output=True)
        return messages

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        return training_data
