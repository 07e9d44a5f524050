"""The patient profile: merging facts turn by turn, and which recommendations apply to the patient.
The applicability table is derived from the recommendations' own wording; these tests pin it."""

from __future__ import annotations

import pytest

from assistant.dialogue import DialogueRules
from assistant.profile import CONFLICT_FACTOR, PROFILE_SLOTS


@pytest.fixture(scope="module")
def rules(extractor):
    return DialogueRules.load(extractor.lexicon).profile


@pytest.fixture(scope="module")
def bot(assistant):
    return assistant


def empty():
    return dict.fromkeys(PROFILE_SLOTS)


def test_a_restated_fact_replaces_the_earlier_one(rules):
    p = rules.merge(empty(), {"sex": "female", "menopausal_status": "postmenopausal", "er_status": "er_positive"})
    p = rules.merge(p, {"sex": "male"})                  # "actually he's a man"
    assert (p["sex"], p["menopausal_status"], p["er_status"]) == ("male", None, "er_positive")


def test_menopausal_status_implies_a_woman(rules):
    p = rules.merge({**empty(), "sex": "male"}, {"menopausal_status": "premenopausal"})
    assert (p["sex"], p["menopausal_status"]) == ("female", "premenopausal")


def test_prior_therapies_accumulate_and_contradictions_are_dropped(rules):
    p = rules.merge(empty(), {"prior_therapies": ["no_prior_endocrine"]})
    p = rules.merge(p, {"prior_therapies": ["prior_chemotherapy"]})
    assert p["prior_therapies"] == ["no_prior_endocrine", "prior_chemotherapy"]
    p = rules.merge(p, {"prior_therapies": ["progressed_on_tamoxifen"]})   # she has had tamoxifen after all
    assert p["prior_therapies"] == ["prior_chemotherapy", "progressed_on_tamoxifen"]


def test_unrelated_slots_are_kept(rules):
    p = rules.merge({**empty(), "metastatic_sites": ["bone_metastases"]}, {"metastatic_sites": ["liver_metastases"]})
    assert p["metastatic_sites"] == ["bone_metastases", "liver_metastases"]


# ---------------------------------------------------------------- applicability, from the text
@pytest.mark.parametrize("rec_id,conditions", [
    ("1.3.4", {"patient_group": {"postmenopausal"}, "er_status": {"er_positive"},
               "endocrine_history": {"no_prior_endocrine", "prior_tamoxifen"}}),   # the two bullets: either
    ("1.3.5", {"patient_group": {"premenopausal", "perimenopausal"}, "er_status": {"er_positive"},
               "endocrine_history": {"no_prior_endocrine"}, "line_of_therapy": {"first_line"}}),
    ("1.3.6", {"patient_group": {"premenopausal", "perimenopausal"}, "endocrine_history": {"prior_tamoxifen"}}),
    ("1.3.7", {"patient_group": {"male"}, "er_status": {"er_positive"}, "line_of_therapy": {"first_line"}}),
    ("1.5.18", {"brain_metastases_extent": {"limited_brain_metastases"},
                "performance_status": {"good_performance_status"},
                "other_disease": {"controlled_extracranial_disease"}}),
])
def test_conditions_are_read_from_the_recommendation(bot, rec_id, conditions):
    got = {g: set(v) for g, v in bot.conditions[rec_id].items() if isinstance(g, str) and g != "offers"}
    assert got == conditions


def test_exceptions_and_offers_are_read_too(bot):
    assert bot.conditions["1.5.19"][("prognosis", "not")] == {"very_poor_prognosis"}   # "unless ... very poor"
    assert bot.conditions["1.3.4"]["offers"] >= {"aromatase_inhibitor"}
    assert bot.conditions["1.3.8"]["offers"] == {"sequential_therapy"}    # not the chemotherapy it is conditional on


@pytest.mark.parametrize("patient,rec_id,verdict", [
    ({"postmenopausal", "female", "er_positive"}, "1.3.4", "matched"),
    ({"male"}, "1.3.4", "conflicting"),
    ({"female"}, "1.3.4", "open"),                                        # menopausal status unknown
    ({"premenopausal", "female", "prior_tamoxifen", "prior_endocrine"}, "1.3.5", "conflicting"),
    ({"multiple_brain_metastases"}, "1.5.18", "conflicting"),
    ({"very_poor_prognosis"}, "1.5.19", "conflicting"),                   # the exception
    ({"progressed_on_ai", "prior_ai", "prior_endocrine", "postmenopausal", "female"}, "1.3.4", "conflicting"),
    ({"er_positive", "indolent_disease"}, "1.3.2", "conflicting"),     # chemotherapy first is for a threat to life
    ({"er_positive", "visceral_crisis"}, "1.3.2", "matched"),
])
def test_applicability(bot, rules, extractor, patient, rec_id, verdict):
    fit = rules.applicability(bot.conditions[rec_id], extractor.lexicon.closure(patient))
    assert bool(getattr(fit, verdict)), fit
    if verdict == "conflicting":
        assert fit.factor == CONFLICT_FACTOR


def test_early_disease_history_only_lifts_the_first_line_conflict(bot, rules, extractor):
    """Adjuvant tamoxifen is a prior therapy, but not first-line treatment of advanced disease (1.3.1 still
    applies); it still rules out "not previously treated with tamoxifen" (1.3.5), and a later line is past 1.3.1."""
    patient = extractor.lexicon.closure({"adjuvant_tamoxifen", "er_positive", "female"})
    assert not rules.applicability(bot.conditions["1.3.1"], patient).conflicting
    assert rules.applicability(bot.conditions["1.3.1"], patient - {"adjuvant_therapy"}).conflicting
    assert rules.applicability(bot.conditions["1.3.1"], patient | {"second_line"}).conflicting
    assert rules.applicability(bot.conditions["1.3.5"], patient | {"premenopausal"}).conflicting
    # Relapse while on the adjuvant treatment: that treatment failed, she is past its first-line decision.
    relapsed = extractor.lexicon.closure({"adjuvant_ai", "progressed_on_ai", "er_positive", "female"})
    assert rules.applicability(bot.conditions["1.3.1"], relapsed).conflicting


def test_a_required_history_the_patient_is_not_known_to_have_ranks_lower(bot, rules):
    assert rules.applicability(bot.conditions["1.3.3"], set()).unmet == ("chemotherapy_history",)
    assert rules.applicability(bot.conditions["1.3.3"], {"prior_chemotherapy", "chemotherapy"}).unmet == ()
    assert rules.applicability(bot.conditions["1.3.5"], set()).unmet == ()   # "not previously treated" is the default
