"""Parse once: what one message says, as the Query that dialogue and retrieval share. Exact facts,
roles and spans; no retrieval involved (the lexicon and the dialogue rules only)."""

from __future__ import annotations

import pytest

from assistant.dialogue import DialogueRules
from assistant.query import Analyzer


@pytest.fixture(scope="module")
def analyzer(extractor):
    return Analyzer(extractor, DialogueRules.load(extractor.lexicon))


# ---------------------------------------------------------------- patient facts
@pytest.mark.parametrize("text,facts", [
    ("71F ER+ HER2- liver and bone mets, no previous hormone therapy, what does NICE recommend?",
     {"sex": "female", "age_group": "70s", "menopausal_status": "postmenopausal", "er_status": "er_positive",
      "her2_status": "her2_negative", "prior_therapies": ["no_prior_endocrine"],
      "metastatic_sites": ["bone_metastases", "liver_metastases"]}),
    ("45M ER+ MBC, first line?",
     {"sex": "male", "age_group": "40s", "er_status": "er_positive", "line_of_therapy": "first_line"}),
    # 50: menopausal status is not taken from an age where it is in doubt
    ("woman, 50", {"sex": "female", "age_group": "50s"}),
    ("a 35 year old woman with ER+ bone mets",
     {"sex": "female", "age_group": "30s", "menopausal_status": "premenopausal", "er_status": "er_positive",
      "metastatic_sites": ["bone_metastases"]}),
    # the most specific fact of a chain, in the message's order
    ("she progressed on tamoxifen", {"prior_therapies": ["progressed_on_tamoxifen"]}),
    ("HER2+ MBC on trastuzumab, now progressing in liver",
     {"her2_status": "her2_positive", "prior_therapies": ["progressed_on_trastuzumab"],
      "metastatic_sites": ["liver_metastases"]}),
    ("Premenopausal or perimenopausal woman", {"menopausal_status": "premenopausal"}),
    # treatments named as history are prior therapies ("had", "finished", "stable on")
    ("she had 6 cycles of Taxotere for a visceral crisis", {"prior_therapies": ["prior_chemotherapy"],
                                                           "metastatic_sites": ["visceral_metastases"],
                                                           "clinical_status": ["visceral_crisis"]}),
    ("extracranial disease stable on letrozole, PS 0",
     {"prior_therapies": ["prior_ai"], "clinical_status": ["controlled_extracranial_disease",
                                                           "good_performance_status"]}),
    # whether the disease is imminently life-threatening, the condition of chemotherapy first (1.3.2)
    ("ER+ MBC, small volume lung mets, LFTs normal, no sx",
     {"er_status": "er_positive", "metastatic_sites": ["lung_metastases"], "clinical_status": ["indolent_disease"]}),
    ("ER+ with a visceral crisis", {"er_status": "er_positive", "clinical_status": ["visceral_crisis"],
                                    "metastatic_sites": ["visceral_metastases"]}),
    # doses, cycles and percentages are not ages
    ("8 Gy single fraction for 60 mets?", {}),
    # recurrence while a treatment is given is progression on it; after it is finished, it is not
    # (and adjuvant treatment was treatment of early disease: early_disease_history)
    ("she relapsed while on adjuvant letrozole", {"prior_therapies": ["progressed_on_ai", "adjuvant_therapy"]}),
    ("relapsed 3 yrs after finishing adjuvant letrozole", {"prior_therapies": ["prior_ai", "adjuvant_therapy"]}),
    # how a course of chemotherapy ended: on progression, or completed
    ("progressing on 1st line chemo", {"prior_therapies": ["progressed_on_chemotherapy"],
                                      "line_of_therapy": "first_line"}),
    ("ER+ MBC, finished first line chemo", {"er_status": "er_positive", "prior_therapies": ["completed_chemotherapy"]}),
    # bedbound (PS4): a poor performance status and, with brain metastases, 1.5.19's very poor prognosis
    ("81F PS4, bedbound", {"sex": "female", "age_group": "80s", "menopausal_status": "postmenopausal",
                           "clinical_status": ["poor_performance_status", "very_poor_prognosis"]}),
    # an age said in words; "never any hormones" is a history without endocrine therapy
    ("she's 41, never any hormones", {"age_group": "40s", "prior_therapies": ["no_prior_endocrine"]}),
    # a wound that smells is the problem, not wound care she has had
    ("she's got a smelly wound on her chest wall", {}),
])
def test_facts(analyzer, text, facts):
    got = {k: v for k, v in analyzer.analyse(text).facts.items() if not k.startswith("_")}
    got = {k: sorted(v) if isinstance(v, list) else v for k, v in got.items()}
    want = {k: sorted(v) if isinstance(v, list) else v for k, v in facts.items()}
    assert got == want


def test_menopause_from_age_is_recorded_for_the_reply(analyzer):
    q = analyzer.analyse("71F ER+ MBC, first line?")
    assert q.facts["_menopause_from_age"] == 71


# ---------------------------------------------------------------- question and description
def test_vignette_splits_description_from_question(analyzer):
    q = analyzer.analyse("62F, T10 lesion on bone scan, CT bone windows equivocal for met vs degenerative - "
                         "is MRI the right next test?")
    assert q.question == "is MRI the right next test?"
    assert "mri" in q.asked
    assert {"bone_scintigraphy", "equivocal_imaging"} <= q.described


def test_short_lead_in_is_part_of_the_question(analyzer):
    q = analyzer.analyse("CT inconclusive for bony mets, should I get an MRI?")
    assert {"ct", "equivocal_imaging", "mri", "bone_metastases"} <= q.asked and not q.described


def test_roles(analyzer):
    q = analyzer.analyse("imaging for bone mets")
    assert q.roles == {"imaging": "intervention", "bone_metastases": "problem"}
    q = analyzer.analyse("who should see her about the fungating wound?")
    assert q.roles["care_team"] == "aspect" and q.roles["fungating_tumour"] == "problem"


def test_patient_facts_are_not_topics(analyzer):
    q = analyzer.analyse("postmenopausal ER+ woman, progressed on tamoxifen")
    assert not q.roles
    assert {"postmenopausal", "er_positive", "progressed_on_tamoxifen", "prior_endocrine"} <= q.profile_concepts


def test_sites_beside_patient_facts_are_context(analyzer):
    assert analyzer.analyse("ER+ pt had 1st line chemo for liver mets").sites_as_context
    assert not analyzer.analyse("imaging for liver mets?").sites_as_context


# ---------------------------------------------------------------- kinds of message
@pytest.mark.parametrize("text,reset", [
    ("new patient", True), ("different case: 66M ER+ bone mets", True), ("let's start over", True),
    ("new bone mets on the scan", False), ("another question about her lymphoedema", False),
])
def test_reset(analyzer, text, reset):
    assert analyzer.analyse(text).reset is reset


@pytest.mark.parametrize("text,update", [
    ("what changed in 2017?", True), ("recommendations from the 2014 update", True), ("is 1.1.6 new?", True),
    ("what's new in the guideline?", True), ("what year is the bisphosphonate recommendation from?", True),
    ("she was diagnosed in 2014, now bone mets", False), ("new brain mets - what to offer?", False),
    ("newly diagnosed bone mets, bisphosphonates?", False),
])
def test_update_questions(analyzer, text, update):
    assert analyzer.analyse(text).update is update


@pytest.mark.parametrize("text,elliptical", [
    ("and for men?", True), ("what about fatigue?", True), ("who coordinates that?", True),
    ("first line endocrine therapy for a postmenopausal woman with ER+ ABC", False),
])
def test_ellipsis(analyzer, text, elliptical):
    assert analyzer.analyse(text).elliptical is elliptical


def test_negated_spans_are_cut_from_the_search_text_only(analyzer):
    q = analyzer.analyse("ER+ MBC, not considered life threatening - chemo or hormones first?")
    assert "life_threatening" in q.negated and "life_threatening" not in q.concepts
    assert "life threatening" not in q.search_text and q.text.startswith("ER+ MBC, not considered life")


def test_out_of_scope_is_what_is_asked_not_the_history_around_it(analyzer):
    q = analyzer.analyse("58F treated for early breast cancer in 2015 with adjuvant letrozole, now has new bone "
                         "mets - should she have bisphosphonates?")
    assert q.oos == ()
    assert analyzer.analyse("adjuvant letrozole for early breast cancer?").oos == ("oos_early_disease",)


@pytest.mark.parametrize("text,oos", [
    ("dose of palliative RT for a painful rib met?", ()),          # 1.5.16 states it: a single 8 Gy fraction
    ("dose of zoledronic acid for bone mets?", ("oos_dosing",)),
    ("what dose for palliative RT to the chest wall?", ("oos_dosing",)),
    ("her lymphoedema got suddenly worse, ?DVT", ()),              # a treatable underlying factor (1.5.3)
    ("DVT on tamoxifen - should she stop it?", ("oos_thrombosis",)),
])
def test_out_of_scope_words_the_guideline_answers_in_one_setting(analyzer, text, oos):
    assert analyzer.analyse(text).oos == oos


def test_a_sequel_names_the_treatment_it_follows(analyzer):
    q = analyzer.analyse("once the chemo's done, what does she go on to?")
    assert q.sequel and "chemotherapy" in q.sequel_of
    q = analyzer.analyse("should she have radiotherapy after that?")
    assert q.sequel and not q.sequel_of and "radiotherapy" in q.role_set("intervention")


def test_a_finding_that_rules_causes_out_negates_their_mentions(analyzer):
    """'Hb, TSH ... all normal': the treatable causes are ruled out, not asked about."""
    q = analyzer.analyse("cancer fatigue, bloods incl Hb, TSH, glucose all normal")
    assert "treatable_causes" in q.negated and "treatable_causes" not in q.concepts
    asked = analyzer.analyse("fatigue - should we check her Hb and TSH?")
    assert "treatable_causes" in asked.concepts and "treatable_causes" not in asked.negated


def test_a_bare_question_after_a_case_asks_about_the_proposal_before_it(analyzer):
    """ "... never had endocrine tx. registrar wants chemo first line - thoughts?": the question names nothing,
    so the clause before it is what is asked, not more description of the patient."""
    q = analyzer.analyse("61F ER+ HER2- MBC, bone and nodes only, postmenopausal, never had endocrine tx. "
                         "registrar wants chemo first line - thoughts?")
    assert {"chemotherapy", "first_line"} <= q.asked
    assert "bone_metastases" in q.described and q.roles["first_line"] == "aspect"
    # A question naming its own topic keeps the clause before it as description.
    q = analyzer.analyse("61F ER+ HER2- MBC, bone and nodes only, postmenopausal, never had endocrine tx. "
                         "registrar wants chemo first line - are bisphosphonates worth it?")
    assert "chemotherapy" not in q.asked and "bisphosphonate" in q.asked


@pytest.mark.parametrize("text,shifts", [
    ("diff thing - who coordinates her care?", True),
    ("separate thing: any research on fatigue?", True),
    ("that's a different drug, isn't it?", False),
])
def test_saying_the_subject_changes(analyzer, text, shifts):
    assert analyzer.analyse(text).shifts_topic is shifts
