"""Patient identifiers: found and redacted exactly; clinical numbers and recommendation IDs left alone."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assistant.privacy import PLACEHOLDERS, nhs_check_digit_valid, redact

pytestmark = pytest.mark.portable
VALID_NHS = ["9434765919", "943 476 5919", "943-476-5919", "4010232137"]
INVALID_NHS = ["9434765918", "1234567890", "943 476 5910"]


@pytest.mark.parametrize("number", VALID_NHS)
def test_valid_nhs_numbers_are_redacted(number):
    r = redact(f"pt {number} ER+ MBC, first line?")
    assert r.text == "pt [NHS number] ER+ MBC, first line?" and r.found == ("nhs_number",)


@pytest.mark.parametrize("number", INVALID_NHS)
def test_numbers_with_an_invalid_check_digit_are_kept(number):
    assert not nhs_check_digit_valid(number.replace(" ", ""))
    assert redact(f"ref {number}").text == f"ref {number}"


@pytest.mark.parametrize("text,kind,expected", [
    ("DOB 12/03/1961, ER+ bone mets", "date", "DOB [date], ER+ bone mets"),
    ("born 3-7-58", "date", "born [date]"),
    ("born 12th March 1961", "date", "born [date]"),
    ("born March 12, 1961", "date", "born [date]"),
    ("lives at SW1A 1AA", "postcode", "lives at [postcode]"),
    ("postcode ls1 4ap", "postcode", "postcode [postcode]"),
    ("call 07700 900123", "phone", "call [phone]"),
    ("tel +44 20 7946 0958", "phone", "tel [phone]"),
    ("daughter: jane.doe@example.nhs.uk", "email", "daughter: [e-mail]"),
])
def test_other_identifiers(text, kind, expected):
    r = redact(text)
    assert (r.text, r.found) == (expected, (kind,))


@pytest.mark.parametrize("text", [
    "show 1.3.4 and 1.5.16", "RR2", "8 Gy single fraction", "71F ER+ HER2- bone mets", "PS 0-1, 6 cycles",
    "what changed in 2017?", "LVEF 40%, Ki-67 30%", "T10 lesion", "ECOG 2", "first line tx 2nd line",
    "anastrozole 1 mg", "CrCl ~40", "HER2 3+", "ER 8/8",
])
def test_clinical_text_is_left_alone(text):
    r = redact(text)
    assert (r.text, r.found) == (text, ())


def test_several_kinds_in_order_of_appearance():
    r = redact("Mrs X, NHS 943 476 5919, DOB 01/02/1950, M1 1AE - ER+ MBC which endocrine tx?")
    assert r.found == ("nhs_number", "date", "postcode")
    assert "943" not in r.text and "1950" not in r.text and "M1 1AE" not in r.text
    assert r.text.endswith("ER+ MBC which endocrine tx?")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_redaction_never_fails_and_is_idempotent(text):
    once = redact(text)
    assert redact(once.text).text == once.text
    assert all(p in once.text for p in {PLACEHOLDERS[k] for k in once.found})
