"""Patient identifiers in clinicians' messages: found and redacted before the text is stored anywhere.

Clinicians paste case details into chat. The assistant needs none of the identifiers to answer (a
recommendation never depends on them), so they are replaced by a placeholder before the message reaches
Rasa (trackers, logs) or the audit store, and the reply reminds the clinician not to enter them.

Found: NHS numbers (10 digits, spaced 3-3-4 or not, whose modulus-11 check digit is valid: a random
10-digit number is left alone), dates (dates of birth and any other full date), UK postcodes, UK phone
numbers and e-mail addresses. Recommendation IDs (1.3.4), doses and ages are not identifiers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Kinds, in the order they are applied (an NHS number is found before a phone number could claim it).
_NHS = re.compile(r"(?<![\d.])(\d{3})[ -]?(\d{3})[ -]?(\d{4})(?![\d.])")
_MONTHS = (r"jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sept?(?:ember)?|"
           r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?")
_DATE = re.compile(
    r"(?<![\d.])(?:\d{1,2}([/-])\d{1,2}\1(?:\d{4}|\d{2})"                         # 12/03/1961, 12-3-61
    r"|\d{1,2}\.\d{1,2}\.\d{4}"                  # 12.03.1961 (not 1.5.16: dotted needs a 4-digit year)
    r"|\d{4}-\d{1,2}-\d{1,2}"                                                    # 1961-03-12
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?(?:{_MONTHS})\.?,?\s+\d{{2,4}}"    # 12th March 1961
    rf"|(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})(?![\d])",      # March 12, 1961
    re.IGNORECASE)
_POSTCODE = re.compile(r"\b(?:[A-PR-UWYZ][A-HK-Y]?\d[A-Z\d]?|GIR)\s?\d[ABD-HJLNP-UW-Z]{2}\b", re.IGNORECASE)
_PHONE = re.compile(r"(?<![\w+])(?:\+44\s?\(?0?\)?\s?|0)(?:\d[\s-]?){9,10}(?!\d)")
_EMAIL = re.compile(r"\b[\w.%+-]+@[\w-]+(?:\.[\w-]+)+\b")
PLACEHOLDERS = {"nhs_number": "[NHS number]", "date": "[date]", "postcode": "[postcode]", "phone": "[phone]",
                "email": "[e-mail]"}
REMINDER = ("Please do not enter patient identifiers (NHS numbers, dates of birth, postcodes, phone numbers or "
            "e-mail addresses): I removed them from your message and did not store them.")


@dataclass(frozen=True)
class Redaction:
    text: str               # the message with identifiers replaced
    found: tuple            # the kinds found, in order of appearance (never the values)

    @property
    def redacted(self) -> bool:
        return bool(self.found)


def nhs_check_digit_valid(digits: str) -> bool:
    """Modulus 11 (NHS Data Dictionary): weights 10..2 over the first nine digits; 11 - remainder, 11 -> 0,
    10 -> the number is invalid."""
    if len(digits) != 10 or not digits.isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1)))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(digits[9])


def redact(text: str) -> Redaction:
    """The text with every identifier replaced by its placeholder, and which kinds were found."""
    found: list = []

    def sub(kind: str, pattern: re.Pattern, value: str, keep=None) -> str:
        def repl(m: re.Match) -> str:
            if keep is not None and keep(m):
                return m.group(0)
            found.append((m.start(), kind))
            return PLACEHOLDERS[kind]
        return pattern.sub(repl, value)

    text = sub("email", _EMAIL, text)
    text = sub("nhs_number", _NHS, text, keep=lambda m: not nhs_check_digit_valid("".join(m.groups())))
    text = sub("date", _DATE, text)
    text = sub("phone", _PHONE, text)
    text = sub("postcode", _POSTCODE, text)
    return Redaction(text, tuple(kind for _, kind in sorted(found)))
