"""One bot message seen the way every chat platform shows it: the parts of a `guideline_answer` payload.

The Slack and Teams renderers both start here, so the two platforms cannot drift apart on what an answer
contains. Pure Python (no Rasa, no platform SDK): the renderers are unit-tested in either environment.

A bot message is what Rasa hands an output channel: {"text", "buttons", "custom"}. The payload carries the
structured answers; the text is what the core wrote for a terminal. Whatever the text says beyond the
structured parts (a list's heading, the guideline's update note, unknown recommendation numbers) is kept as
`intro`, so a platform rendering never loses information the REST reply has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from assistant import answer as core_answer
from assistant.links import nice_url

PAYLOAD_TYPE = "guideline_answer"
NO_RECOMMENDATION = "No recommendation in CG81"
STRENGTH_LABELS = {"offer": "Offer", "consider": "Consider", "do not": "Do not", "other": "Other wording"}
RESEARCH_LABEL = "Research recommendation"
CANDIDATES_LINE = "Meanwhile, the candidate recommendations are:"
ALSO_RELEVANT = "Also relevant:"
SELECT_ONE = "Select a recommendation to see its full text:"
# What a button sends back to look a recommendation up: the core treats a message naming an ID as a look-up.
LOOKUP_TEMPLATE = "show {id}"
# Failures the platforms must not dress up as "no recommendation in CG81" (the text says what happened).
FAILURE_REASONS = {"service_error"}
_SAFE_MRKDWN = re.compile(r"^[A-Za-z0-9 .\[\]·()-]*$")


def guideline_payload(message: dict) -> dict | None:
    custom = message.get("custom")
    if isinstance(custom, dict) and custom.get("type") == PAYLOAD_TYPE:
        return custom
    return None


def lookup_payload(rec_id: str) -> str:
    return LOOKUP_TEMPLATE.format(id=rec_id)


def strength_label(item: dict) -> str:
    if item.get("kind") == "research":
        return RESEARCH_LABEL
    return STRENGTH_LABELS.get(item.get("strength") or "", str(item.get("strength") or "").capitalize())


def title(item: dict) -> str:
    """'1.3.7 [2009] · Offer': ID, year and strength, the line a clinician scans first."""
    return f"{item['id']} [{item['year']}] · {strength_label(item)}"


def where(item: dict) -> str:
    """'NICE CG81 · section 1.3 Systemic disease-modifying therapy › Endocrine therapy'."""
    if item.get("kind") == "research":
        place = "Recommendations for research"
    else:
        place = f"section {item.get('section')} {item.get('section_title') or ''}".rstrip()
    if item.get("subsection"):
        place += f" › {item['subsection']}"
    return f"NICE CG81 · {place}"


def link(item: dict) -> str:
    return nice_url(item)


def is_plain_label(text: str) -> bool:
    """True when text can sit inside markup untouched (IDs, years, strength labels): no formatting chars."""
    return bool(_SAFE_MRKDWN.match(text))


def button_title(item: dict) -> str:
    return str(item["id"])


@dataclass
class View:
    """What one bot message shows, platform-neutral."""

    kind: str                                   # answer | abstain | clarify | text
    text: str                                   # the core's whole text: the plain-text fallback
    intro: str = ""                             # text the structured parts do not carry
    notes: list = field(default_factory=list)
    full: list = field(default_factory=list)    # answers shown with their whole text
    more: list = field(default_factory=list)    # answers offered as look-up buttons
    more_label: str = ALSO_RELEVANT
    question: str = ""                          # a clarification's question
    options: list = field(default_factory=list)  # [{"title", "payload"}]: clarification or plain buttons
    reason: str | None = None


def _buttons(message: dict) -> list:
    out = []
    for b in message.get("buttons") or []:
        if isinstance(b, dict) and isinstance(b.get("title"), str) and b.get("title"):
            payload = b.get("payload") if isinstance(b.get("payload"), str) and b.get("payload") else b["title"]
            out.append({"title": b["title"], "payload": payload})
    return out


def _render_core(item: dict) -> str | None:
    try:
        return core_answer.render(item)
    except (KeyError, TypeError):
        return None


def _leftover(text: str, answers: list, drop_lines: set) -> str:
    """The core's text minus what the structured parts show: answer renderings, headings, notes, the
    clarification question and the 'Also relevant' line."""
    rest = text
    headings = set()
    for item in answers:
        rendered = _render_core(item)
        if rendered:
            rest = rest.replace(rendered, "")
            headings.add(rendered.split("\n", 1)[0].strip())
    kept = []
    for line in rest.split("\n"):
        stripped = line.strip()
        if stripped in headings or stripped in drop_lines or stripped.startswith("Also relevant:"):
            continue
        kept.append(line.rstrip())
    out = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()
    return out


def view(message: dict) -> View:
    """Split one bot message into the parts a renderer lays out."""
    text = message.get("text") if isinstance(message.get("text"), str) else ""
    payload = guideline_payload(message)
    buttons = _buttons(message)
    if payload is None:
        return View("text", text, intro=text, options=buttons)
    answers = [a for a in payload.get("answers") or [] if isinstance(a, dict) and a.get("id") and "text" in a]
    notes = [n for n in payload.get("notes") or [] if isinstance(n, str) and n]
    reason = payload.get("reason")
    clar = payload.get("clarification") if isinstance(payload.get("clarification"), dict) else None
    if not answers and not clar:
        if reason in FAILURE_REASONS:
            return View("text", text, intro=text or core_answer.SERVICE_UNAVAILABLE, reason=reason)
        return View("abstain", text, intro=text or core_answer.abstention_text(reason), notes=notes, reason=reason)
    # Answers the core wrote out in full are shown in full (a listing shows them all; an answer shows the
    # first); the rest are "also relevant" look-ups, as on every other channel.
    full = [a for a in answers if a["text"] and a["text"] in text] if text else []
    if answers and not full and not clar and not text:
        full = answers[:1]
    shown = {a["id"] for a in full}
    more = [a for a in answers if a["id"] not in shown]
    drop = set(notes) | {CANDIDATES_LINE}
    question = ""
    options: list = []
    if clar:
        question = str(clar.get("question") or "")
        drop.add(question.strip())
        by_title = {b["title"]: b["payload"] for b in buttons}
        options = [{"title": o, "payload": by_title.get(o, o)} for o in clar.get("options") or [] if isinstance(o, str)]
        options += [b for b in buttons if b["title"] not in {o["title"] for o in options}]
    intro = _leftover(text, answers, drop) if text else ""
    label = ALSO_RELEVANT if (full or "Also relevant" in text) else SELECT_ONE
    return View("clarify" if clar else "answer", text, intro=intro, notes=notes, full=full, more=more,
                more_label=label, question=question, options=options, reason=reason)


def lines(text: str) -> list:
    """The recommendation text line by line (bullets are lines of their own in the corpus)."""
    return text.split("\n")
