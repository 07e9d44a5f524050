"""Entity extraction: exact spans, labels and canonical values (medspacy-style expectations)."""

from __future__ import annotations

import pytest

from assistant.entities import REC_ID_LABEL, EntityExtractor

pytestmark = pytest.mark.portable


@pytest.fixture(scope="module")
def exact():
    """The same pipeline without typo correction, to show which matches come from it."""
    return EntityExtractor(fuzzy=False)


def _tuples(extractor, text):
    return [(e.text, e.label, e.value) for e in extractor.extract(text)]


# Each expectation checked by hand: the span a clinician would mark, its label and canonical concept.
CASES = [
    ("ER+/HER2- MBC in a postmenopausal woman", [
        ("ER+/HER2-", "RECEPTOR", "er_pos_her2_neg"),
        ("MBC", "CONDITION", "advanced_breast_cancer"),
        ("postmenopausal", "MENOPAUSAL_STATUS", "postmenopausal"),
        ("woman", "SEX", "female"),
    ]),
    ("Herceptin and brain mets", [
        ("Herceptin", "DRUG", "trastuzumab"),
        ("brain mets", "MET_SITE", "brain_metastases"),
    ]),
    ("bone scan vs PET-CT", [
        ("bone scan", "IMAGING", "bone_scintigraphy"),
        ("PET-CT", "IMAGING", "pet_ct"),
    ]),
    ("WBRT", [("WBRT", "THERAPY", "whole_brain_radiotherapy")]),
    ("lymphedema after CDT", [
        ("lymphedema", "COMPLICATION", "lymphoedema"),
        ("CDT", "THERAPY", "complex_decongestive_therapy"),
    ]),
    ("show 1.5.16 and RR2", [
        ("1.5.16", REC_ID_LABEL, "1.5.16"),
        ("RR2", REC_ID_LABEL, "RR2"),
    ]),
    ("research recommendation 4", [("research recommendation 4", REC_ID_LABEL, "RR4")]),
    ("RR 2 and rec 1.3.4", [("RR 2", REC_ID_LABEL, "RR2"), ("1.3.4", REC_ID_LABEL, "1.3.4")]),
    ("research rec #3", [("research rec #3", REC_ID_LABEL, "RR3")]),
    ("1.3.13", [("1.3.13", REC_ID_LABEL, "1.3.13")]),
    ("x-ray of the femur", [
        ("x-ray", "IMAGING", "plain_radiography"),
        ("femur", "MET_SITE", "long_bones"),
    ]),
    ("bisphos for bony mets", [
        ("bisphos", "THERAPY", "bisphosphonate"),
        ("bony mets", "MET_SITE", "bone_metastases"),
    ]),
    ("letrozole and goserelin", [
        ("letrozole", "DRUG", "letrozole"),
        ("goserelin", "DRUG", "goserelin"),
    ]),
    ("what dose of letrozole?", [
        ("dose", "OUT_OF_SCOPE", "oos_dosing"),
        ("letrozole", "DRUG", "letrozole"),
    ]),
    ("HER2-negative, ER-positive disease", [
        ("HER2-negative", "RECEPTOR", "her2_negative"),
        ("ER-positive", "RECEPTOR", "er_positive"),
    ]),
    ("not previously treated with tamoxifen",
     [("not previously treated with tamoxifen", "PRIOR_THERAPY", "no_prior_endocrine")]),
    ("the patient is present today", []),
    ("1.3.4.5 and 11.3.4", []),
    # "who should get ..." asks which patients, not which team.
    ("who should get tamoxifen?", [
        ("who should get", "CONDITION", "patient_selection"),
        ("tamoxifen", "DRUG", "tamoxifen"),
    ]),
    ("single resectable brain met, dismal prognosis", [
        ("single resectable brain met", "MET_SITE", "limited_brain_metastases"),
        ("dismal prognosis", "CLINICAL_STATUS", "very_poor_prognosis"),
    ]),
    ("any tools that could help her?", [("tools that could help", "TOPIC", "decision_aid")]),
    ("she doesnt want much detail", [("doesnt want much detail", "TOPIC", "information_preference")]),
    ("when the docetaxel stops working", [
        ("docetaxel", "DRUG", "docetaxel"),
        ("stops working", "COMPLICATION", "progression"),
    ]),
    # what is prevented stays a concept of its own
    ("does exercise prevent lymphoedema?", [
        ("exercise", "THERAPY", "exercise"),
        ("prevent", "TOPIC", "prevention"),
        ("lymphoedema", "COMPLICATION", "lymphoedema"),
    ]),
    # treatment given for early disease, and how a course of chemotherapy ended
    ("adjuvant tamoxifen finished 10 yrs ago", [("adjuvant tamoxifen", "PRIOR_THERAPY", "adjuvant_tamoxifen")]),
    ("progressing on chemo", [("progressing on chemo", "PRIOR_THERAPY", "progressed_on_chemotherapy")]),
    ("which abx?", [("abx", "OUT_OF_SCOPE", "oos_side_effects")]),
    ("order them on FP10", [("order them", "OUT_OF_SCOPE", "oos_other_topic"), ("FP10", "OUT_OF_SCOPE",
                                                                               "oos_other_topic")]),
]


@pytest.mark.parametrize("text,expected", CASES, ids=[c[0] for c in CASES])
def test_spans_labels_values(extractor, text, expected):
    assert _tuples(extractor, text) == expected


@pytest.mark.parametrize("text", [c[0] for c in CASES] + ["  Herceptin\tand  brain mets  ", "¿Herceptin? (WBRT)"])
def test_offsets_match_text(extractor, text):
    ents = extractor.extract(text)
    for e in ents:
        assert text[e.start:e.end] == e.text
    assert [e.start for e in ents] == sorted(e.start for e in ents)
    assert all(a.end <= b.start for a, b in zip(ents, ents[1:]))  # no overlaps


def test_offsets_with_surrounding_text(extractor):
    text = "  Herceptin\tand  brain mets  "
    assert [(e.start, e.end, e.text) for e in extractor.extract(text)] == [(2, 11, "Herceptin"),
                                                                          (17, 27, "brain mets")]


def test_entity_to_dict(extractor):
    (e,) = extractor.extract("WBRT")
    assert e.to_dict() == {"start": 0, "end": 4, "text": "WBRT", "label": "THERAPY",
                           "value": "whole_brain_radiotherapy", "negated": False, "historical": False}


# ---------------------------------------------------------------- typos
@pytest.mark.parametrize("text,value", [
    ("tamoxifin", "tamoxifen"),
    ("lymphodema", "lymphoedema"),
    ("vinorelbinne", "vinorelbine"),
])
def test_typos_named_in_the_issue(extractor, text, value):
    assert _tuples(extractor, text) == [(text, extractor.lexicon.concepts[value].label, value)]


@pytest.mark.parametrize("text,value", [
    ("vinorelbinne", "vinorelbine"),
    ("tamoxiffen", "tamoxifen"),
    ("letrozzole", "letrozole"),
    ("trastuzunab", "trastuzumab"),
    ("lymphoedemma", "lymphoedema"),
    ("radiotherrapy", "radiotherapy"),
    ("bisphosphonatte", "bisphosphonate"),
])
def test_typo_correction_is_what_finds_misspellings(extractor, exact, text, value):
    """Misspellings that no term lists are found by the edit-distance correction, not by the term list."""
    assert [e.value for e in extractor.extract(text)] == [value]
    assert exact.extract(text) == []


def test_typo_span_keeps_the_original_text(extractor):
    text = "is tamoxiffen ok for lymphoedemma?"
    assert [(e.text, e.value, text[e.start:e.end]) for e in extractor.extract(text)] == [
        ("tamoxiffen", "tamoxifen", "tamoxiffen"), ("lymphoedemma", "lymphoedema", "lymphoedemma")]


@pytest.mark.parametrize("text", ["the patient is present today", "general question", "with the patients",
                                  "please could you summarise", "help me with a reflection"])
def test_typo_correction_leaves_ordinary_words_alone(extractor, text):
    assert [e for e in extractor.extract(text) if e.label != "TOPIC"] == []


# ---------------------------------------------------------------- negation
@pytest.mark.parametrize("text,negated", [
    ("life threatening", False),
    ("not considered life threatening", True),
    ("disease is not really symptomatic visceral disease", True),
    ("she doesn't have brain mets", True),
    ("without lymphoedema", True),
    ("patient is not postmenopausal", True),
    ("brain is clear", True),
])
def test_negation(extractor, text, negated):
    (e,) = extractor.extract(text)
    assert e.negated is negated


def test_negation_stops_at_a_clause_break(extractor):
    assert [(e.value, e.negated) for e in extractor.extract("no bone mets but brain mets")] == [
        ("bone_metastases", True), ("brain_metastases", False)]
    assert [(e.value, e.negated) for e in extractor.extract("bone mets, not considered life threatening")] == [
        ("bone_metastases", False), ("life_threatening", True)]


@pytest.mark.parametrize("text,value,negated", [
    ("DVT excluded", "oos_thrombosis", True),                    # a cue after the concept
    ("treatable causes ruled out", "treatable_causes", True),
    ("underlying causes have been looked for and excluded", "treatable_causes", True),  # words between
    ("rule out DVT before CDT", "oos_thrombosis", True),          # a two-word cue before it
    ("unless they have a very poor prognosis", "very_poor_prognosis", True),  # an exception reaches further
    ("ER negative disease", "er_negative", False),                 # "negative" inside a term is not a cue
    ("women who havent had tamoxifen", "prior_tamoxifen", True),   # no apostrophe: "have" "nt"
    ("she hasnt had chemo", "prior_chemotherapy", True),
    ("she declined tamoxifen back then", "tamoxifen", True),      # declined or refused: never had it
    ("refused chemotherapy in 2019", "chemotherapy", True),
])
def test_negation_cues_before_and_after(extractor, text, value, negated):
    assert [(e.value, e.negated) for e in extractor.extract(text) if e.value == value] == [(value, negated)]


# ---------------------------------------------------------------- history
@pytest.mark.parametrize("text,value,historical", [
    ("she had 6 cycles of Taxotere", "docetaxel", True),
    ("extracranial disease stable on letrozole", "letrozole", True),
    ("ER+ pt finished 1st line docetaxel", "docetaxel", True),
    ("should she have chemo?", "chemotherapy", False),
    ("should she go on endocrine now?", "endocrine_therapy", False),
    ("had a bone scan, should she get chemo?", "chemotherapy", False),  # the cue belongs to the scan
    ("had it resected and then WBRT", "whole_brain_radiotherapy", True),  # coordinated with a treatment had
    ("had surgery and WBRT", "whole_brain_radiotherapy", True),
    ("had surgery, should she have WBRT?", "whole_brain_radiotherapy", False),
    ("had docetaxel, what about capecitabine?", "capecitabine", False),
    ("had first-line docetaxel for lung disease", "docetaxel", True),       # a hyphen inside a word joins it
    ("received 4 cycles of weekly paclitaxel", "paclitaxel", True),         # words that qualify the treatment
    ("paclitaxel now completed, next?", "paclitaxel", True),                # said to be over after it
    ("ER+ disease on exemestane, new liver mets", "exemestane", True),      # "on <drug>" is what she takes
    ("what is NICE's guidance on exemestane?", "exemestane", False),        # ... not a subject
    ("should we start her on exemestane?", "exemestane", False),
    ("CT shows a new rib lesion", "ct", True),                              # a scan whose findings are reported
    ("lytic lesion on MRI, what next?", "mri", True),
    ("is an MRI the next test?", "mri", False),
    ("isotope scan and CT both inconclusive, what next?", "ct", True),    # a result said of a scan
    ("CT and bone scan both equivocal", "ct", True),                        # ... and of the scan joined to it
    ("CT and bone scan - which is better for spinal mets?", "ct", False),
    ("MRI normal but still in pain", "mri", True),
    ("is a CT clearer than a bone scan?", "ct", False),
    ("plain film of the humerus shows a lytic lesion", "plain_radiography", True),  # what was scanned, then
    ("what does an MRI of the spine show?", "mri", False),
    ("5 years after early breast cancer, now bone mets", "oos_early_disease", True),  # a past condition
    ("adjuvant letrozole for early breast cancer?", "oos_early_disease", False),
    ("the breast MDT has discussed her", "mdt", True),                      # care a team has given
    ("the wound care nurses are doing that", "wound_care", True),
    ("she has been seen by palliative care", "palliative_care", True),
    ("should she be seen by palliative care?", "palliative_care", False),   # ... not care asked about
    ("should the MDT discuss her?", "mdt", False),
    ("she's seeing palliative care already", "palliative_care", True),      # care she is receiving
    ("she is under the palliative care team", "palliative_care", True),
    ("should she be seeing palliative care?", "palliative_care", False),
    ("she's done the bandaging phase", "multilayer_bandaging", True),
    ("who looks after her symptom control?", "palliative_care", False),     # "look after" asks about care
    ("after palliative care review, what next?", "palliative_care", True),
    ("she got paclitaxel first line", "paclitaxel", True),                  # "got" a treatment
    ("s/p resection of a solitary brain met", "surgery", True),             # status post
    ("should she get paclitaxel?", "paclitaxel", False),
    ("62F, mastectomy 2016, now bone mets", "surgery", True),               # dated in the past
    ("axillary dissection in 2019, arm now swollen", "oos_early_disease", True),
    ("letrozole 3 yrs ago, now liver mets", "letrozole", True),
    ("was the denosumab 2017 update about bone mets?", "oos_uncovered_drug", False),  # a year naming an update
    ("had resection of the solitary met followed by WBRT, what now?", "whole_brain_radiotherapy", True),
    ("resection of the solitary met followed by WBRT?", "whole_brain_radiotherapy", False),  # a plan asked
    ("had resection of the met. followed by WBRT?", "whole_brain_radiotherapy", False),  # another sentence
])
def test_treatment_history(extractor, text, value, historical):
    """ConText-style history: a treatment the patient had or is on describes her, it is not asked about."""
    [e] = [e for e in extractor.extract(text) if e.value == value]
    assert e.historical is historical


@pytest.mark.parametrize("text,value,negated", [
    ("who else should see her apart from the wound care team?", "wound_care", True),
    ("other than chemotherapy, what are the options?", "chemotherapy", True),
    ("we've already looked for treatable causes", "treatable_causes", True),   # a check said to be done
    ("have checked for reversible causes", "treatable_causes", True),
    ("should we look for treatable causes?", "treatable_causes", False),     # ... not one asked about
    ("we've excluded anaemia, thyroid, low mood, still exhausted", "supportive_care", True),  # a negated list
    ("no anaemia, low mood is the main thing", "supportive_care", False),  # ... not a clause of its own
])
def test_what_is_set_aside_or_already_checked_is_not_asked_about(extractor, text, value, negated):
    assert [(e.value, e.negated) for e in extractor.extract(text) if e.value == value] == [(value, negated)]


@pytest.mark.parametrize("text,value,negated", [
    # A cue that negates an effect on the concept: the concept is still what is talked about.
    ("does exercise not make her arm swelling worse?", "lymphoedema", False),
    ("she's been told swimming won't cause lymphoedema", "lymphoedema", False),
    ("she doesn't have arm swelling", "lymphoedema", True),
    # Nor one before its use, as recommendations are worded and quoted ("the don't use PET-CT rec").
    ("the do not use PET-CT to monitor rec - still current?", "pet_ct", False),
    ("why are we not using a bone scan to follow her response?", "bone_scintigraphy", False),
    ("no PET-CT yet", "pet_ct", True),
])
def test_a_negated_effect_leaves_the_concept_affirmed(extractor, text, value, negated):
    assert [(e.value, e.negated) for e in extractor.extract(text) if e.value == value] == [(value, negated)]


@pytest.mark.parametrize("text,value,negated", [
    ("she has chosen chemo over BSC", "palliative_care", True),      # what a choice is made over is set aside
    ("she has chosen chemo over BSC", "chemotherapy", False),
    ("prefers tablets rather than chemotherapy", "chemotherapy", True),
    ("lymphoedema over several months", "lymphoedema", False),       # 'over' with no choice before it
    ("when is MRI preferred over other imaging?", "imaging", True),  # what a test is weighed against
    ("when is MRI preferred over other imaging?", "mri", False),
])
def test_what_a_choice_is_made_over_is_set_aside(extractor, text, value, negated):
    assert [(e.value, e.negated) for e in extractor.extract(text) if e.value == value] == [(value, negated)]


def test_care_said_to_be_sorted_is_care_she_has(extractor):
    (e,) = [e for e in extractor.extract("her dressings are sorted now") if e.value == "wound_care"]
    assert e.historical


def test_multiword_term_with_its_own_negation_is_not_negated(extractor):
    (e,) = extractor.extract("not previously treated with tamoxifen")
    assert (e.value, e.negated) == ("no_prior_endocrine", False)
    (e,) = extractor.extract("disease is not life threatening")
    assert (e.value, e.negated) == ("indolent_disease", False)


def test_concepts_exclude_negated_unless_asked(extractor):
    assert extractor.concepts("not considered life threatening") == set()
    assert extractor.concepts("not considered life threatening", negated=True) == {"life_threatening"}
    assert extractor.concepts("life threatening") == {"life_threatening"}
    # broader concepts of a negated mention are dropped with it
    assert extractor.concepts("no brain mets") == set()
    assert extractor.concepts("no brain mets", negated=True) == {"brain_metastases", "cns"}


def test_concepts_include_broader_and_exclude_rec_ids(extractor):
    assert extractor.concepts("ER+/HER2- MBC in a postmenopausal woman") == {
        "er_pos_her2_neg", "er_positive", "her2_negative", "advanced_breast_cancer", "postmenopausal", "female"}
    assert extractor.concepts("show 1.5.16 and RR2") == set()


# ---------------------------------------------------------------- tokenisation
@pytest.mark.parametrize("text,tokens", [
    ("ER+ MBC", ["ER", "+", "MBC"]),
    ("HER2+ MBC", ["HER2", "+", "MBC"]),
    ("ER-positive", ["ER", "-", "positive"]),
    ("HER2-negative", ["HER2", "-", "negative"]),
    ("PET-CT", ["PET", "-", "CT"]),
])
def test_clinical_tokenisation(extractor, text, tokens):
    assert [t.text for t in extractor.nlp.make_doc(text)] == tokens


def test_er_her2_tokenisation_as_documented(extractor):
    assert [t.text for t in extractor.nlp.make_doc("ER+/HER2-")] == ["ER", "+", "/", "HER2", "-"]


def test_er_her2_tokenisation_splits_slash_and_trailing_minus(extractor):
    tokens = [t.text for t in extractor.nlp.make_doc("ER+/HER2-")]
    assert tokens[-3:] == ["/", "HER2", "-"]
    assert "".join(tokens) == "ER+/HER2-"


@pytest.mark.parametrize("text,concept", [
    ("ER+/PR- MBC", "er_positive"),
    ("HER2-/ER+ MBC", "her2_negative"),
    ("ER+/PR+/HER2 negative MBC", "er_positive"),
])
def test_receptor_status_before_a_slash_is_recognised(extractor, text, concept):
    assert concept in extractor.concepts(text)


@pytest.mark.parametrize("text,span,concepts", [
    # The choice of bisphosphonate is both the choice and the drug (1.5.15).
    ("who decides which bisphosphonate to use?", "which bisphosphonate to use", {"agent_choice", "bisphosphonate"}),
    # A bone said to be about to break: the established risk, still a fracture.
    ("femoral shaft with cortical destruction", "cortical destruction",
     {"impending_fracture", "pathological_fracture"}),
    ("tumour fed by oestrogen", "fed by oestrogen", {"er_positive"}),
    # Lay and ward words clinicians use for what the guideline names.
    ("the tumour has broken through the skin", "broken through the skin", {"uncontrolled_local_disease"}),
    ("she says she has no say in her treatment", "no say", {"involvement_preference"}),
    ("not sure how to pitch it to her", "how to pitch", {"information_preference"}),
    ("he is not fit for an operation", "not fit for an operation", {"surgery_not_appropriate", "surgery"}),
    ("what mmHg should the sleeve be?", "mmhg", {"oos_dosing"}),
    ("can we signpost her to anyone?", "signpost", {"support_groups"}),
    ("she accepts extra toxicity", "extra toxicity", {"combination_chemotherapy"}),
    ("is bone scanning a good way to follow her disease?", "follow her disease", {"monitoring"}),
    ("is there any upside to swimming?", "any upside", {"quality_of_life"}),
    ("she'd leave the decisions to the doctors", "leave the decisions to the doctors", {"involvement_preference"}),
    ("planning CDT, anything to do first?", "anything to do first", {"before_starting"}),
    ("each doctor tells her a different story", "different story", {"information"}),
    ("does she get chances to ask questions?", "chances to ask", {"information"}),
    ("he used to want loads of detail", "loads of detail", {"information_preference"}),
    ("one drug after another, or a doublet?", "one drug after another", {"sequential_therapy"}),
    ("are combos worth it in MBC?", "combos", {"combination_chemotherapy", "chemotherapy"}),
    ("memantine alongside whole brain RT?", "memantine", {"oos_uncovered_drug"}),
    ("what's the effective radiation dose of a bone scan?", "effective radiation dose", {"oos_other_topic"}),
    ("brain met, bone dz stable on letrozole", "bone dz stable", {"controlled_extracranial_disease"}),
    ("progressed on paclitaxel, go on to another agent?", "another agent", {"sequential_therapy"}),
    ("her care is fragmented between the teams", "fragmented", {"supportive_care"}),
    ("liver >60% replaced, LFTs deranged", "lfts deranged", {"visceral_crisis", "life_threatening"}),
    ("she's 41, still cycling regularly", "still cycling regularly", {"premenopausal"}),
    ("what support needs should we be assessing?", "support needs", {"supportive_care"}),
    ("any role for acupuncture?", "acupuncture", {"oos_other_topic"}),
    ("what's the Macmillan helpline number?", "helpline number", {"oos_other_topic"}),
    ("is anyone studying uncontrolled local disease?", "is anyone studying", {"research"}),
    # Vertebral levels as clinicians write them; pain said to be from the bones, and pain that is not.
    ("painful T12 met, RT?", "t12 met", {"bone_metastases"}),
    ("known L4 lesion on CT", "l4 lesion", {"bone_metastases"}),
    ("bone pain despite oxycodone", "bone pain", {"bone_pain", "pain"}),
    ("smell and pain are the worst of it", "pain", {"pain"}),
    ("painful mets in the pelvis", "painful mets", {"bone_pain", "pain"}),
    ("dex dose for cord compression?", "dex dose", {"oos_uncovered_drug"}),
    ("lymphangitic spread, hypoxic on air", "hypoxic", {"life_threatening"}),
    ("ER+, bili up, RUQ pain", "bili up", {"visceral_crisis", "life_threatening"}),
    ("gem/carbo or docetaxel?", "gem", {"gemcitabine"}),
    ("is CA 15-3 useful to follow her?", "ca 15-3", {"oos_biomarker_testing"}),
    ("can she still drive after the craniotomy?", "still drive", {"oos_other_topic"}),
    ("she's torn between the two options", "torn between", {"decision_making"}),
    # Regimens by their initials; anthracyclines ruled out in a clinician's words; side effects, a treatment
    # CG81 does not cover, key workers in the plural, a drug asked for without a name.
    ("4 cycles of EC then paclitaxel", "ec", {"epirubicin", "anthracycline"}),
    ("had AC-T in 2019", "ac-t", {"doxorubicin", "anthracycline"}),
    ("cardiac history so no more anthracyclines", "no more anthracyclines", {"anthracycline_unsuitable"}),
    ("red peeling palms and soles on cape", "palms and soles", {"oos_side_effects"}),
    ("SBRT to a solitary adrenal met?", "sbrt", {"oos_other_topic"}),
    ("stereotactic radiosurgery for 2 brain mets", "stereotactic radiosurgery", {"stereotactic_radiotherapy"}),
    ("are key workers still a thing?", "key workers", {"supportive_care"}),
    ("she sees three different teams", "different teams", {"supportive_care"}),
    ("her husband wants us to keep things from her", "keep things from her", {"information_preference"}),
    ("anything drug-wise for her bone mets?", "drug-wise", {"medication"}),
    ("fit, wants maximum response", "maximum response", {"combination_chemotherapy"}),
    ("exemestane hasn't worked", "hasn't worked", {"progression"}),
    ("to see if the chemo is working", "is working", {"monitoring"}),
])
def test_new_terms_are_read_with_their_exact_span_and_broader_concepts(extractor, text, span, concepts):
    [e] = [e for e in extractor.extract(text) if text[e.start:e.end].lower() == span]
    assert concepts <= extractor.lexicon.closure([e.value])


@pytest.mark.parametrize("text", ["big lytic lesion with >50% of the cortex involved", "nodes involved",
                                  "liver involved on CT"])
def test_involved_in_a_description_is_not_her_wish_to_be_involved(extractor, text):
    """'Involved' said of a bone or a node is the disease, not 1.2's involvement in decisions."""
    assert "involvement_preference" not in extractor.concepts(text)
    assert "involvement_preference" in extractor.concepts("she wants to be involved in decisions")


@pytest.mark.parametrize("text,value,historical", [
    ("check whether the anastrozole is working", "anastrozole", True),     # she is on it
    ("is anastrozole an option for her?", "anastrozole", False),
])
def test_a_treatment_said_to_be_working_is_hers(extractor, text, value, historical):
    assert [(e.value, e.historical) for e in extractor.extract(text) if e.value == value] == [(value, historical)]
