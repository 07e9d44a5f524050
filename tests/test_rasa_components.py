"""Rasa-side glue, run under .venv-rasa (Rasa 3.6, spaCy 3.4): NLU components and REST input checks."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.rasa
rasa = pytest.importorskip("rasa")

from rasa.shared.nlu.training_data.message import Message  # noqa: E402

from assistant import answer, config  # noqa: E402
from assistant.rasa.channel import parse_body, reply_without_nlu  # noqa: E402
from assistant.rasa.lexicon_extractor import ClinicalIntentGuard, LexiconEntityExtractor  # noqa: E402


@pytest.fixture(scope="module")
def extractor():
    return LexiconEntityExtractor(LexiconEntityExtractor.get_default_config())


def test_lexicon_component_emits_canonical_entities(extractor):
    [msg] = extractor.process([Message.build("Herceptin for HER2+ MBC with brain mets?")])
    got = [(e["start"], e["end"], e["entity"], e["value"], e["extractor"]) for e in msg.get("entities")]
    assert got == [
        (0, 9, "drug", "trastuzumab", "LexiconEntityExtractor"),
        (14, 19, "receptor", "her2_positive", "LexiconEntityExtractor"),
        (20, 23, "condition", "advanced_breast_cancer", "LexiconEntityExtractor"),
        (29, 39, "met_site", "brain_metastases", "LexiconEntityExtractor"),
    ]


def test_lexicon_component_finds_recommendation_ids(extractor):
    [msg] = extractor.process([Message.build("show 1.5.16 and RR2")])
    assert [(e["entity"], e["value"]) for e in msg.get("entities")] == [("rec_id", "1.5.16"), ("rec_id", "RR2")]


def _guarded(extractor, text: str, intent: str) -> str:
    guard = ClinicalIntentGuard(ClinicalIntentGuard.get_default_config())
    [msg] = extractor.process([Message.build(text)])
    msg.set("intent", {"name": intent, "confidence": 0.8})
    return guard.process([msg])[0].get("intent")["name"]


def test_guard_turns_small_talk_with_clinical_concepts_into_a_question(extractor):
    assert _guarded(extractor, "hi, what imaging for bone mets?", "greet") == "ask_guideline"
    assert _guarded(extractor, "thanks - and for men?", "thanks") == "ask_guideline"


def test_guard_leaves_small_talk_and_other_intents_alone(extractor):
    assert _guarded(extractor, "hello there", "greet") == "greet"
    assert _guarded(extractor, "thanks, that's all about metastatic disease", "thanks") == "thanks"
    assert _guarded(extractor, "what about men?", "follow_up") == "follow_up"


@pytest.mark.parametrize("body,reason", [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe\x00", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"sender": "a"}', "'message' must be a string"),
    (b'{"sender": "a", "message": 5}', "'message' must be a string"),
    (b'{"sender": "", "message": "hi"}', "'sender'"),
    (json.dumps({"sender": "x" * 200, "message": "hi"}).encode(), "'sender'"),
    (b'{"sender": "a", "message": "hi", "metadata": [1]}', "'metadata'"),
    (b"{" + b" " * 70000 + b"}", "bytes"),
])
def test_malformed_requests_are_refused_with_a_reason(body, reason):
    with pytest.raises(ValueError, match=reason):
        parse_body(body)


def test_valid_request_is_parsed():
    assert parse_body(b'{"sender": "nurse-7", "message": "bone mets?"}') == ("nurse-7", "bone mets?", None)
    assert parse_body(b'{"message": "hi"}')[0] == "default"


def test_inputs_that_never_reach_the_dialogue():
    assert reply_without_nlu("") == answer.EMPTY_MESSAGE
    assert reply_without_nlu(" \x00\x01\t ") == answer.EMPTY_MESSAGE
    assert reply_without_nlu("a" * (config.MAX_QUESTION_CHARS + 1)) == answer.too_long(config.MAX_QUESTION_CHARS)
    assert reply_without_nlu("bone mets imaging?") is None
