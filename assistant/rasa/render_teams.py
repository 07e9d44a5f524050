"""Microsoft Teams activities (Adaptive Cards) for one turn of the guideline assistant.

Pure functions (no Rasa import) so they are unit-tested in either environment.

Exactness: Adaptive Card `TextBlock`s interpret a Markdown subset, so an `*` or `_` in a recommendation
could turn into emphasis and a line starting "1. " into a list. Every string that comes from the corpus or
the core is therefore a `TextRun` inside a `RichTextBlock`, which Teams displays literally; each line of a
recommendation is its own block, so "• " bullets keep their lines.

Card schema version 1.4: everything used here (RichTextBlock, ActionSet, Action.Submit, Action.OpenUrl)
is 1.2 or older, and Teams renders 1.4 on desktop, web and mobile. Clarification and look-up buttons are
`Action.Submit` with data {"cg81_reply": <text to send>}: Teams sends the click back as a message activity
whose `value` is that data. A message over Teams' size limit (about 28 KB) shows later answers as buttons.
"""

from __future__ import annotations

import json

from assistant.rasa import render_common as rc

CARD_VERSION = "1.4"
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
REPLY_KEY = "cg81_reply"
LABEL_KEY = "cg81_label"
MAX_CARD_BYTES = 24_000        # Teams refuses messages over ~28 KB; leave room for the activity envelope
MAX_ACTIONS_PER_SET = 5        # Teams shows at most a handful of buttons in one row
MAX_SUMMARY_CHARS = 200
MAX_FALLBACK_CHARS = 2000      # the card's plain-text fallback, for clients that cannot render cards
SHORTENED = "Some recommendations are offered as buttons to keep this message within Teams' size limit."


def run(text: str, **style) -> dict:
    return {"type": "TextRun", "text": text, **style}


def rich(text: str, spacing: str | None = None, **style) -> dict:
    block = {"type": "RichTextBlock", "inlines": [run(text, **style)]}
    if spacing:
        block["spacing"] = spacing
    return block


def _text_blocks(text: str, **style) -> list:
    """One RichTextBlock per line; blank lines become spacing so the layout follows the text."""
    out, gap = [], False
    for line in text.split("\n"):
        if not line.strip():
            gap = True
            continue
        out.append(rich(line, spacing="Medium" if gap else "Small", **style) if out else rich(line, **style))
        gap = False
    return out


def submit(title: str, payload: str) -> dict:
    return {"type": "Action.Submit", "title": title, "data": {REPLY_KEY: payload, LABEL_KEY: title}}


def _action_sets(actions: list) -> list:
    return [{"type": "ActionSet", "actions": actions[i:i + MAX_ACTIONS_PER_SET]}
            for i in range(0, len(actions), MAX_ACTIONS_PER_SET)]


def answer_elements(item: dict) -> list:
    """Title (ID, year, strength), where it sits, the exact text line by line, a link to NICE."""
    return [rich(rc.title(item), weight="Bolder", size="Medium"),
            rich(rc.where(item), spacing="None", isSubtle=True, size="Small"),
            *_text_blocks(item["text"]),
            {"type": "ActionSet", "actions": [{"type": "Action.OpenUrl", "title": "View on the NICE website",
                                                "url": rc.link(item)}]}]


def _body(view: rc.View, full: list, more: list, selected: str | None, shortened: bool) -> list:
    body: list = []
    if selected:
        body.append(rich(f"Selected: {selected}", isSubtle=True, size="Small"))
    if view.kind == "abstain":
        body.append({"type": "Container", "style": "attention",
                     "items": [rich(rc.NO_RECOMMENDATION, weight="Bolder", size="Medium", color="Attention")]})
    for note in view.notes:
        body += _text_blocks(note, isSubtle=True)
    if view.kind == "clarify":
        body += _text_blocks(view.question, weight="Bolder")
        body += _action_sets([submit(o["title"], o["payload"]) for o in view.options])
    if view.intro:
        body += _text_blocks(view.intro)
    if view.kind == "text" and view.options:
        body += _action_sets([submit(o["title"], o["payload"]) for o in view.options])
    if view.kind == "clarify" and full:
        body.append(rich(rc.CANDIDATES_LINE, isSubtle=True))
    for item in full:
        body.append({"type": "Container", "separator": bool(body), "spacing": "Medium" if body else "None",
                     "items": answer_elements(item)})
    if more:
        body.append(rich(view.more_label, isSubtle=True, spacing="Medium"))
        if not full:   # a list of headings only: say what each one is before its button
            body += [rich(f"{rc.title(a)} — {rc.where(a)}", spacing="Small") for a in more]
        body += _action_sets([submit(rc.button_title(a), rc.lookup_payload(a["id"])) for a in more])
    if shortened:
        body.append(rich(SHORTENED, isSubtle=True, size="Small"))
    return body


def card(view: rc.View, full: list, more: list, selected: str | None = None, shortened: bool = False) -> dict:
    return {"type": "AdaptiveCard", "$schema": CARD_SCHEMA, "version": CARD_VERSION,
            "fallbackText": _truncate(view.text or rc.NO_RECOMMENDATION, MAX_FALLBACK_CHARS),
            "body": _body(view, full, more, selected, shortened)}


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _size(obj: dict) -> int:
    return len(json.dumps(obj, ensure_ascii=False).encode("utf-8"))


def _summary(view: rc.View) -> str:
    first = view.full[0] if view.full else None
    if view.kind == "abstain":
        text = rc.NO_RECOMMENDATION
    elif view.kind == "clarify":
        text = view.question
    elif first:
        text = f"NICE CG81 {first['id']}: {first['text']}"
    else:
        text = view.intro or view.text or ""
    return _truncate(" ".join(text.split()), MAX_SUMMARY_CHARS)


def render_message(message: dict, selected: str | None = None) -> dict:
    """The activity fields (type, text or attachments, summary) for one bot message."""
    view = rc.view(message)
    if view.kind == "text" and not view.options and not selected:
        return {"type": "message", "text": view.text, "textFormat": "plain"}
    full, more = list(view.full), list(view.more)
    content = card(view, full, more, selected)
    while _size(content) > MAX_CARD_BYTES and len(full) > 1:
        more.insert(0, full.pop())
        content = card(view, full, more, selected, shortened=True)
    return {"type": "message", "summary": _summary(view),
            "attachments": [{"contentType": CARD_CONTENT_TYPE, "content": content}]}


def render_turn(messages: list, selected: str | None = None) -> list:
    acts = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        if not (message.get("text") or rc.guideline_payload(message) or message.get("buttons")):
            continue
        acts.append(render_message(message, selected=selected if i == 0 else None))
    return acts


def typing() -> dict:
    return {"type": "typing"}
