"""The encoder fine-tuning: its training data validates and stays apart from every evaluation set, the
trained model is the one the index uses and is refused or retrained when its recipe changes, and the
encoder gets the same input in training as at run time."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from assistant import config, corpus, evaluate, finetune
from assistant.retrieval import IndexUnavailable, resolve_model

GOLD_DIR = config.ROOT / "tests" / "gold"


def _write(path: Path, items: list) -> Path:
    path.write_text(yaml.safe_dump({"version": 1, "source": "test", "items": items}), encoding="utf-8")
    return path


def _words(text: str) -> set:
    return set(re.findall(r"[a-z0-9+]+", text.lower()))


# ---------------------------------------------------------------- training data
def test_training_questions_cover_every_recommendation():
    items = finetune.load_questions()
    per_id: dict = {}
    for _, rid in items:
        per_id[rid] = per_id.get(rid, 0) + 1
    assert set(per_id) == set(corpus.EXPECTED_IDS + corpus.EXPECTED_RESEARCH_IDS)
    assert min(per_id.values()) >= 10


def test_training_questions_share_nothing_with_the_evaluation_sets():
    """Not the same question, and not a near copy (most words shared), in any turn of any gold set."""
    train = [(t, _words(t)) for turns, _ in finetune.load_questions() for t in turns]
    for gold in sorted(GOLD_DIR.glob("*.yaml")):
        for item in evaluate.load_gold(gold):
            for turn in item["turns"]:
                words = _words(turn)
                for q, tw in train:
                    assert q.lower() != turn.lower(), (gold.name, turn)
                    if len(words) >= 5:
                        overlap = len(words & tw) / len(words | tw)
                        assert overlap < 0.7, (gold.name, turn, q)


@pytest.mark.parametrize("bad, message", [
    ([{"id": "1.9.9", "question": "is this in the corpus?"}], "not in the corpus"),
    ([{"id": "1.1.1", "question": "same question"}, {"id": "1.1.2", "question": "Same question"}], "duplicate"),
    ([{"id": "1.1.1", "question": "a follow-up", "context": ""}], "short"),
    ([{"id": "1.1.1"}], "question"),
    ([{"id": "one", "question": "an id that is no recommendation id"}], "does not match"),
])
def test_bad_training_data_is_refused(tmp_path, bad, message):
    with pytest.raises(finetune.TrainingDataError, match=message):
        finetune.load_questions(_write(tmp_path / "train.yaml", bad))


# ---------------------------------------------------------------- the trained artefact
def test_index_uses_the_fine_tuned_encoder_with_its_recipe(retriever):
    assert config.EMBEDDING_MODEL == finetune.NAME
    path, provenance = resolve_model(finetune.NAME)
    stored = finetune.stored_recipe(Path(path))
    _, base = resolve_model(finetune.BASE_MODEL)
    expected = finetune.recipe(base)
    assert {k: stored[k] for k in expected} == expected
    assert stored["pairs"] == len(finetune.load_questions())
    assert stored["epoch_loss"][-1] < stored["epoch_loss"][0]
    weights = (Path(path) / "model.safetensors").read_bytes()
    assert provenance["weights_sha256"] == corpus.sha256_bytes(weights)
    assert retriever.meta["model"] == provenance
    assert provenance["base"] == base


def test_changed_training_data_makes_the_model_stale(tmp_path):
    _, base = resolve_model(finetune.BASE_MODEL)
    current = finetune.recipe(base)
    assert finetune.is_current(current)
    changed = tmp_path / "train.yaml"
    shutil.copy(finetune.TRAIN_PATH, changed)
    with changed.open("a", encoding="utf-8") as fh:
        fh.write('  - id: "1.1.1"\n    question: "one more question about imaging visceral mets"\n')
    assert not finetune.is_current(finetune.recipe(base, changed))


def test_changed_dialogue_rules_make_the_model_stale(tmp_path, monkeypatch):
    """The rules decide what a follow-up carries into the encoder's input, so the training anchors too."""
    _, base = resolve_model(finetune.BASE_MODEL)
    assert finetune.is_current(finetune.recipe(base))
    changed = tmp_path / "dialogue.yaml"
    changed.write_text(config.DIALOGUE_RULES_PATH.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    monkeypatch.setattr(config, "DIALOGUE_RULES_PATH", changed)
    assert not finetune.is_current(finetune.recipe(base))


def test_changed_analysis_code_makes_the_model_stale(tmp_path, monkeypatch):
    """The analysis code decides what each training question looks like to the encoder, as the rules do."""
    _, base = resolve_model(finetune.BASE_MODEL)
    assert finetune.is_current(finetune.recipe(base))
    changed = tmp_path / "entities.py"
    changed.write_bytes(finetune.TEXT_CODE[0].read_bytes() + b"\n# edited\n")
    monkeypatch.setattr(finetune, "TEXT_CODE", (changed, *finetune.TEXT_CODE[1:]))
    assert not finetune.is_current(finetune.recipe(base))


def test_stale_model_refused_when_rebuild_not_allowed(tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(finetune.MODEL_DIR, model_dir)
    record = json.loads((model_dir / finetune.RECIPE_FILE).read_text(encoding="utf-8"))
    record["train_sha256"] = "0" * 64
    (model_dir / finetune.RECIPE_FILE).write_text(json.dumps(record), encoding="utf-8")
    before = (model_dir / "model.safetensors").read_bytes()
    with pytest.raises(IndexUnavailable, match="missing or stale"):
        finetune.ensure(model_dir, rebuild=False)
    assert (model_dir / "model.safetensors").read_bytes() == before
    with pytest.raises(IndexUnavailable, match="missing or stale"):
        finetune.ensure(tmp_path / "nothing", rebuild=False)


def test_training_moves_questions_towards_their_recommendation(tmp_path, monkeypatch):
    """A short real run on a slice of the data: the loss falls, the saved model loads, and more of the
    questions it was trained on rank their own recommendation first than before."""
    from sentence_transformers import SentenceTransformer

    items = finetune.load_questions()[::12]
    monkeypatch.setitem(finetune.HYPER, "epochs", 2)
    monkeypatch.setitem(finetune.HYPER, "lr", 1e-4)
    base_path, base = resolve_model(finetune.BASE_MODEL)
    record = finetune.train(base_path, {"test": True}, tmp_path, items)
    assert record["pairs"] == len(items) and record["epoch_loss"][1] < record["epoch_loss"][0]
    assert json.loads((tmp_path / finetune.RECIPE_FILE).read_text(encoding="utf-8"))["test"] is True
    anchors, labels, docs = finetune.training_pairs(items)
    base_model = SentenceTransformer(base_path, device="cpu")
    tuned = SentenceTransformer(str(tmp_path), device="cpu")
    d = base_model.encode(docs, normalize_embeddings=True)

    def ranked_first(model):
        """How many questions rank their own recommendation first (the loss is relative: a softmax over
        all recommendations, so raw cosines may all fall while the right one pulls ahead)."""
        best = (model.encode(anchors, normalize_embeddings=True) @ d.T).argmax(axis=1)
        return int(sum(int(b) == lab for b, lab in zip(best, labels)))

    assert ranked_first(tuned) > ranked_first(base_model)


# ---------------------------------------------------------------- same input in training and at run time
def test_encoder_sees_the_same_text_in_training_and_at_run_time(assistant):
    questions = ["she's wiped out all the time with her secondary breast cancer, what helps?",
                 "58F ER+ HER2- bone mets, no previous hormone tx, what does NICE recommend?",
                 "no DVT, arm swollen since surgery - first treatment?"]
    anchors, _, _ = finetune.training_pairs([((q,), "1.1.1") for q in questions])
    for question, anchor in zip(questions, anchors):
        reply = assistant.respond(question, {})
        assert reply.trace["dense_text"] == anchor


def test_a_follow_up_is_trained_on_what_it_carries_over(assistant):
    conversations = [("imaging for bone mets", "and for the liver?"),
                     ("fungating tumour - who should manage the dressings?", "has anyone called for trials on this?"),
                     ("ER+ MBC on letrozole, postmenopausal", "she's exhausted all the time, what helps?")]
    anchors, _, _ = finetune.training_pairs([(c, "1.1.1") for c in conversations])
    for (first, follow_up), anchor in zip(conversations, anchors):
        reply = assistant.respond(follow_up, assistant.respond(first, {}).state)
        assert reply.trace["dense_text"] == anchor
    assert "imaging" in anchors[0]                                  # carried over from the first message
