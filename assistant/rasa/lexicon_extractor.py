"""Rasa NLU component that runs the CG81 lexicon entity extractor (blank spaCy, no downloaded model)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Text

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.extractors.extractor import EntityExtractorMixin
from rasa.shared.nlu.constants import ENTITIES, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData


def to_rasa_entities(entities: list) -> List[Dict[Text, Any]]:
    """Lexicon spans → Rasa entity dicts: entity = label in lower case, value = canonical concept id."""
    return [{"start": e.start, "end": e.end, "value": e.value, "entity": e.label.lower(), "text": e.text,
             "confidence_entity": 1.0} for e in entities]


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.ENTITY_EXTRACTOR], is_trainable=False)
class LexiconEntityExtractor(GraphComponent, EntityExtractorMixin):
    """Emits the lexicon's concepts as entities; the same code the action server's core uses."""

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {"lexicon_path": None, "fuzzy": True}

    def __init__(self, config: Dict[Text, Any]) -> None:
        self._config = config
        self._extractor = None

    @classmethod
    def create(cls, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> "LexiconEntityExtractor":
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
    def validate_config(cls, config: Dict[Text, Any]) -> None:
        path: Optional[Text] = config.get("lexicon_path")
        if path is not None and not isinstance(path, str):
            raise ValueError("lexicon_path must be a string path")
