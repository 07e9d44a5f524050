"""The terminology file is validated on load, and concept closure follows broader links and inferences."""

from __future__ import annotations

import copy

import pytest
import yaml

from assistant.lexicon import Lexicon, LexiconError

pytestmark = pytest.mark.portable

# A small lexicon that is valid: each bad case below changes one thing in it.
MINIMAL = {
    "version": 1,
    "labels": ["DRUG", "THERAPY", "COMPLICATION", "PRIOR_THERAPY", "OUT_OF_SCOPE"],
    "inferences": [{"if_all": ["tamoxifen", "progression"], "then": ["progressed_on_tamoxifen"]}],
    "concepts": [
        {"id": "tamoxifen", "label": "DRUG", "broader": ["endocrine_therapy"], "terms": ["tamoxifen", "nolvadex"]},
        {"id": "letrozole", "label": "DRUG", "broader": ["aromatase_inhibitor"], "terms": ["letrozole", "femara"]},
        {"id": "aromatase_inhibitor", "label": "THERAPY", "broader": ["endocrine_therapy"],
         "terms": ["aromatase inhibitor"]},
        {"id": "endocrine_therapy", "label": "THERAPY", "expansion": "endocrine therapy",
         "terms": ["endocrine therapy", "hormone therapy"]},
        {"id": "progression", "label": "COMPLICATION", "terms": ["progression", "progressed"]},
        {"id": "progressed_on_tamoxifen", "label": "PRIOR_THERAPY", "broader": ["prior_endocrine"],
         "terms": ["progressed on tamoxifen"]},
        {"id": "prior_endocrine", "label": "PRIOR_THERAPY", "terms": ["prior endocrine therapy"]},
        {"id": "oos_dosing", "label": "OUT_OF_SCOPE", "terms": ["dose", "dosage"]},
    ],
}


def _write(tmp_path, data, name="lexicon.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _concept(data, cid):
    return next(c for c in data["concepts"] if c["id"] == cid)


@pytest.fixture(scope="module")
def real():
    return Lexicon.load()


# ---------------------------------------------------------------- validation on load
def test_minimal_lexicon_loads(tmp_path):
    lex = Lexicon.load(_write(tmp_path, MINIMAL))
    assert lex.version == 1
    assert set(lex.concepts) == {c["id"] for c in MINIMAL["concepts"]}
    assert lex.concepts["tamoxifen"].terms == ("tamoxifen", "nolvadex")
    assert lex.concepts["tamoxifen"].broader == ("endocrine_therapy",)
    # expansion defaults to the id with spaces; an explicit one is kept
    assert lex.concepts["aromatase_inhibitor"].expansion == "aromatase inhibitor"
    assert lex.concepts["endocrine_therapy"].expansion == "endocrine therapy"
    assert lex.concepts["oos_dosing"].out_of_scope and not lex.concepts["tamoxifen"].out_of_scope


def test_terms_are_lowercased_and_stripped(tmp_path):
    data = copy.deepcopy(MINIMAL)
    _concept(data, "tamoxifen")["terms"] = ["Tamoxifen ", "NOLVADEX"]
    assert Lexicon.load(_write(tmp_path, data)).concepts["tamoxifen"].terms == ("tamoxifen", "nolvadex")


def _unknown_concept_key(d):
    _concept(d, "tamoxifen")["synonyms"] = ["tam"]


def _unknown_top_key(d):
    d["aliases"] = {}


def _label_not_in_labels(d):
    _concept(d, "tamoxifen")["label"] = "MEDICINE"


def _duplicated_term(d):
    _concept(d, "letrozole")["terms"].append("nolvadex")


def _duplicated_term_other_case(d):
    _concept(d, "letrozole")["terms"].append("  Nolvadex")


def _unknown_broader(d):
    _concept(d, "tamoxifen")["broader"] = ["endocrine_therapies"]


def _oos_without_prefix(d):
    _concept(d, "oos_dosing")["id"] = "dosing"


def _inference_unknown_if(d):
    d["inferences"][0]["if_all"] = ["tamoxifen", "progresion"]


def _inference_unknown_then(d):
    d["inferences"][0]["then"] = ["progressed_on_tamox"]


def _duplicated_concept_id(d):
    d["concepts"].append({"id": "tamoxifen", "label": "DRUG", "terms": ["soltamox"]})


def _missing_terms(d):
    del _concept(d, "letrozole")["terms"]


def _bad_id_pattern(d):
    _concept(d, "letrozole")["id"] = "Letrozole"


def _wrong_version(d):
    d["version"] = 2


@pytest.mark.parametrize("mutate,message", [
    (_unknown_concept_key, r"concepts/0: Additional properties are not allowed \('synonyms' was unexpected\)"),
    (_unknown_top_key, r"\(top\): Additional properties are not allowed \('aliases' was unexpected\)"),
    (_label_not_in_labels, r"concept tamoxifen has unknown label MEDICINE"),
    (_duplicated_term, r"term 'nolvadex' is in both tamoxifen and letrozole"),
    (_duplicated_term_other_case, r"term 'nolvadex' is in both tamoxifen and letrozole"),
    (_unknown_broader, r"concept tamoxifen names unknown broader concept endocrine_therapies"),
    (_oos_without_prefix, r"out-of-scope concept dosing must start with 'oos_'"),
    (_inference_unknown_if, r"inference names unknown concepts \['progresion'\]"),
    (_inference_unknown_then, r"inference names unknown concepts \['progressed_on_tamox'\]"),
    (_duplicated_concept_id, r"duplicated concept ids \['tamoxifen'\]"),
    (_missing_terms, r"concepts/1: 'terms' is a required property"),
    (_bad_id_pattern, r"concepts/1/id: 'Letrozole' does not match"),
    (_wrong_version, r"version: 1 was expected"),
], ids=lambda v: v.__name__.strip("_") if callable(v) else None)
def test_bad_lexicon_is_refused_with_a_useful_message(tmp_path, mutate, message):
    data = copy.deepcopy(MINIMAL)
    mutate(data)
    assert data != MINIMAL
    path = _write(tmp_path, data)
    with pytest.raises(LexiconError, match=message) as info:
        Lexicon.load(path)
    assert str(path) in str(info.value)  # the message says which file is wrong


def test_unreadable_yaml_is_refused(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("version: 1\nlabels: [DRUG\nconcepts: {", encoding="utf-8")
    with pytest.raises(LexiconError, match="cannot read"):
        Lexicon.load(path)
    with pytest.raises(LexiconError, match="cannot read"):
        Lexicon.load(tmp_path / "missing.yaml")


def test_minimal_closure(tmp_path):
    lex = Lexicon.load(_write(tmp_path, MINIMAL))
    assert lex.closure(["letrozole"]) == {"letrozole", "aromatase_inhibitor", "endocrine_therapy"}
    assert lex.closure(["tamoxifen"]) == {"tamoxifen", "endocrine_therapy"}
    # the inferred concept brings its own broader concepts
    assert lex.closure(["tamoxifen", "progression"]) == {
        "tamoxifen", "endocrine_therapy", "progression", "progressed_on_tamoxifen", "prior_endocrine"}
    assert lex.closure(["letrozole", "progression"]) == {
        "letrozole", "aromatase_inhibitor", "endocrine_therapy", "progression"}


# ---------------------------------------------------------------- closure over the real lexicon
@pytest.mark.parametrize("concept,implied", [
    ("letrozole", {"non_steroidal_ai", "aromatase_inhibitor", "endocrine_therapy"}),
    ("anastrozole", {"non_steroidal_ai", "aromatase_inhibitor", "endocrine_therapy"}),
    ("exemestane", {"steroidal_ai", "aromatase_inhibitor", "endocrine_therapy"}),
    ("goserelin", {"ovarian_suppression", "endocrine_therapy"}),
    ("zoledronic_acid", {"bisphosphonate", "medication"}),
    ("doxorubicin", {"anthracycline", "chemotherapy"}),
    ("epirubicin", {"anthracycline", "chemotherapy"}),
    ("trastuzumab", {"biological_therapy", "systemic_therapy", "medication"}),
    ("tamoxifen", {"endocrine_therapy"}),
])
def test_closure_follows_broader_links(real, concept, implied):
    closure = real.closure([concept])
    assert closure == {concept} | implied


def test_letrozole_is_an_aromatase_inhibitor(real):
    assert "aromatase_inhibitor" in real.closure(["letrozole"])
    assert "aromatase_inhibitor" not in real.closure(["tamoxifen"])


@pytest.mark.parametrize("given,inferred", [
    ({"tamoxifen", "progression"}, {"progressed_on_tamoxifen", "prior_tamoxifen", "prior_endocrine"}),
    ({"tamoxifen", "adjuvant_therapy"}, {"prior_tamoxifen", "prior_endocrine"}),
    ({"letrozole", "progression"}, {"progressed_on_ai", "prior_ai", "progressed_on_endocrine"}),
    ({"trastuzumab", "progression"}, {"progressed_on_trastuzumab", "prior_trastuzumab"}),
])
def test_closure_applies_inferences(real, given, inferred):
    assert inferred <= real.closure(given)
    # no single one of the concepts implies the combination
    for single in given:
        assert not inferred & real.closure([single])


def test_closure_of_nothing_or_unknown_is_empty(real):
    assert real.closure([]) == set()
    assert real.closure(["no_such_concept"]) == set()


# ---------------------------------------------------------------- the committed lexicon
def test_real_lexicon_loads(real):
    assert real.version == 1
    assert "OUT_OF_SCOPE" in real.labels and "REC_ID" not in real.labels
    assert all(c.label in real.labels for c in real.concepts.values())
    assert all(c.id.startswith("oos_") for c in real.concepts.values() if c.out_of_scope)
    assert all(not c.id.startswith("oos_") for c in real.concepts.values() if not c.out_of_scope)
    terms = [t for c in real.concepts.values() for t in c.terms]
    assert len(terms) == len(set(terms))


@pytest.mark.parametrize("concept,label,term", [
    ("trastuzumab", "DRUG", "herceptin"),
    ("letrozole", "DRUG", "femara"),
    ("anastrozole", "DRUG", "arimidex"),
    ("exemestane", "DRUG", "aromasin"),
    ("goserelin", "DRUG", "zoladex"),
    ("zoledronic_acid", "DRUG", "zoledronic acid"),
    ("doxorubicin", "DRUG", "doxorubicin"),
    ("epirubicin", "DRUG", "epirubicin"),
    ("bone_scintigraphy", "IMAGING", "bone scan"),
    ("plain_radiography", "IMAGING", "x-ray"),
    ("pet_ct", "IMAGING", "pet-ct"),
    ("lymphoedema", "COMPLICATION", "lymphedema"),
    ("lymphoedema", "COMPLICATION", "lymphoedema"),
    ("whole_brain_radiotherapy", "THERAPY", "wbrt"),
    ("bisphosphonate", "THERAPY", "bisphos"),
])
def test_issue_concepts_present(real, concept, label, term):
    c = real.concepts[concept]
    assert c.label == label
    assert term in c.terms


def test_fingerprint_tracks_content(tmp_path):
    a = Lexicon.load(_write(tmp_path, MINIMAL, "a.yaml"))
    b = Lexicon.load(_write(tmp_path, MINIMAL, "b.yaml"))
    assert a.fingerprint() == b.fingerprint()
    data = copy.deepcopy(MINIMAL)
    _concept(data, "letrozole")["terms"].append("letrozol")
    assert Lexicon.load(_write(tmp_path, data, "c.yaml")).fingerprint() != a.fingerprint()
    data = copy.deepcopy(MINIMAL)
    data["inferences"] = []
    assert Lexicon.load(_write(tmp_path, data, "d.yaml")).fingerprint() != a.fingerprint()
