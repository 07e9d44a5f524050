"""The parsed corpus is exactly what the parser makes of the source, word for word."""

from __future__ import annotations

import re

import pytest

from assistant import config, corpus

pytestmark = pytest.mark.portable


def _words(text: str) -> list:
    return text.replace("•", " ").split()


def _without_furniture(text: str) -> str:
    """Independent of the parser: drop page headers/footers, rejoin words hyphenated at a line break."""
    keep = [ln for ln in text.splitlines()
            if not re.match(r"^\s*(Advanced breast cancer: diagnosis and treatment \(CG81\)|© NICE|"
                            r"conditions#notice|Page \d+|of \d+)", ln)]
    return re.sub(r"(?<=[A-Za-z])-\n(?=[a-z])", "-", "\n".join(keep))


def _raw_body(source: str, rec_id: str) -> str:
    """The raw text between an ID and its year tag."""
    body = source[re.search(rf"^{re.escape(rec_id)} ", source, re.M).end():]
    return _without_furniture(body[: re.search(r"\[\d{4}\]", body).start()])


def test_committed_corpus_is_parser_output(source_text):
    assert config.CORPUS_PATH.read_text(encoding="utf-8") == corpus.render_jsonl(corpus.parse(source_text))


def test_all_recommendations_present_in_order(source_text):
    ids = [r.id for r in corpus.parse(source_text)]
    assert ids == corpus.EXPECTED_IDS + corpus.EXPECTED_RESEARCH_IDS
    assert len(ids) == 52


def test_record_fields(source_text):
    recs = {r.id: r.to_json() for r in corpus.parse(source_text)}
    r = recs["1.3.5"]
    assert (r["kind"], r["section"], r["section_title"], r["subsection"], r["year"], r["strength"]) == (
        "recommendation", "1.3", "Systemic disease-modifying therapy", "Endocrine therapy", 2009, "offer")
    assert recs["1.2.1"]["section_title"] == "Providing information and support for decision making"
    assert recs["1.1.6"]["year"] == 2017 and recs["1.5.1"]["year"] == 2014
    assert recs["RR4"]["subsection"] == "Biological response modifiers (progressive metastatic disease)"
    assert recs["RR2"]["kind"] == "research" and "Why this is important" in recs["RR2"]["text"]
    assert all("[20" not in r["text"] and "Page " not in r["text"] for r in recs.values())
    assert recs["1.3.4"]["text"].count("\n• ") == 2


def test_every_recommendation_matches_source_word_for_word(source_text):
    for rec in corpus.parse(source_text):
        if rec.kind == "research":
            continue
        assert _words(rec.text) == _words(_raw_body(source_text, rec.id)), rec.id


def test_research_text_matches_source_word_for_word(source_text):
    flat = " ".join(_words(_without_furniture(source_text)))
    for rec in corpus.parse(source_text):
        if rec.kind == "research":
            assert " ".join(_words(rec.text)) in flat, rec.id


@pytest.mark.parametrize("rec_id,strength", [
    ("1.1.7", "do not"), ("1.1.8", "do not"), ("1.1.6", "consider"), ("1.5.14", "consider"),
    ("1.3.4", "offer"), ("1.3.10", "offer"), ("1.2.2", "offer"), ("1.1.1", "other"), ("1.5.9", "other"),
    ("1.5.17", "other"),
])
def test_strength_rule(source_text, rec_id, strength):
    assert {r.id: r.strength for r in corpus.parse(source_text)}[rec_id] == strength


@pytest.mark.parametrize("mutate,message", [
    (lambda s: s.replace("1.1.3 Assess proximal", "1.1.2 Assess proximal"), "duplicated"),
    (lambda s: s.replace("1.5.12 A wound care", "A wound care"), "missing: 1.5.12"),
    (lambda s: s.replace("1.1.4 Use MRI", "1.1.9 Use MRI"), "missing: 1.1.4"),
    (lambda s: s.replace("treatment. [2009] \n\n1.1.8", "treatment. \n\n1.1.8"), "no year tag"),
    (lambda s: s.replace("1.3.8 On disease", "1.3.X On disease").replace("1.3.9 Consider", "1.3.8 On disease x")
     .replace("1.3.X On disease", "1.3.9 Consider"), "out of order"),
    (lambda s: s.replace("Recommendations for research", "Notes"), "does not look like CG81"),
])
def test_parser_refuses_bad_source_and_writes_nothing(tmp_path, source_text, mutate, message):
    bad = mutate(source_text)
    assert bad != source_text
    src, out = tmp_path / "bad.txt", tmp_path / "out.jsonl"
    src.write_text(bad, encoding="utf-8")
    with pytest.raises(corpus.CorpusError, match=message):
        corpus.build(src, out)
    assert not out.exists() and not out.with_suffix(".meta.json").exists()


def test_stale_corpus_is_refused(tmp_path, source_text):
    src, out = tmp_path / "src.txt", tmp_path / "c.jsonl"
    src.write_text(source_text, encoding="utf-8")
    corpus.build(src, out)
    assert len(corpus.load(out, src)) == 52
    src.write_text(source_text.replace("Offer tamoxifen as first-line", "Offer nothing as first-line"),
                   encoding="utf-8")
    with pytest.raises(corpus.CorpusError, match="stale"):
        corpus.load(out, src)
