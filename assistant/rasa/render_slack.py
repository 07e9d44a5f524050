"""Slack Block Kit for one turn of the guideline assistant.

Pure functions (no Rasa, no slack_sdk import) so they are unit-tested in either environment; the Slack
channel additionally parses every message with slack_sdk's Block Kit models before posting it.

Exactness: Slack treats &, < and > as control characters in every text field, so they are escaped
(Slack shows the entity as the character). Recommendation text, section names and notes go into
`plain_text` objects (with emoji conversion off), where Slack applies no formatting at all: an `*` or `_`
in the corpus can never turn into bold or italics, and "\\n• " bullets stay as they are. Only our own
labels (IDs, years, strengths), checked to hold no formatting character, use mrkdwn for emphasis.

Limits (https://api.slack.com/reference/block-kit): ≤ 50 blocks a message, section text ≤ 3000
characters, header ≤ 150, button text ≤ 75, button value ≤ 2000, ≤ 25 elements an actions block,
≤ 10 elements a context block, and a plain `text` fallback for notifications.
"""

from __future__ import annotations

from assistant.rasa import render_common as rc

MAX_BLOCKS = 50
MAX_SECTION_CHARS = 3000
MAX_HEADER_CHARS = 150
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_ACTIONS = 25
MAX_CONTEXT_ELEMENTS = 10
MAX_FALLBACK_CHARS = 39000   # chat.postMessage truncates `text` at 40 000 characters
REPLY_ACTION_PREFIX = "cg81_reply"
LINK_ACTION_PREFIX = "cg81_link"
SHORTENED = "Some recommendations are offered as buttons to keep this message within Slack's limits."


def escape(text: str) -> str:
    """Slack's three control characters as entities; everything else verbatim."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def plain(text: str) -> dict:
    return {"type": "plain_text", "text": escape(text), "emoji": False}


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _chunks(text: str, limit: int = MAX_SECTION_CHARS) -> list:
    """Split text so that each escaped piece fits a section, at line breaks where possible."""
    out, current = [], ""
    for line in text.split("\n"):
        candidate = line if not current else current + "\n" + line
        if len(escape(candidate)) <= limit:
            current = candidate
            continue
        if current:
            out.append(current)
        while len(escape(line)) > limit:   # one line longer than a section: cut it
            cut = limit
            while len(escape(line[:cut])) > limit:
                cut -= 1
            out.append(line[:cut])
            line = line[cut:]
        current = line
    if current or not out:
        out.append(current)
    return out


def _sections(text: str) -> list:
    return [{"type": "section", "text": plain(piece)} for piece in _chunks(text) if piece.strip()]


class _Ids:
    """Action IDs must be unique within a message."""

    def __init__(self) -> None:
        self.n = 0

    def next(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{self.n}"


def _button(title: str, payload: str, ids: _Ids) -> dict | None:
    if not title or not payload or len(payload) > MAX_BUTTON_VALUE:
        return None
    return {"type": "button", "text": plain(_truncate(title, MAX_BUTTON_TEXT)), "value": payload,
            "action_id": ids.next(REPLY_ACTION_PREFIX)}


def _actions(buttons: list) -> list:
    buttons = [b for b in buttons if b]
    return [{"type": "actions", "elements": buttons[i:i + MAX_ACTIONS]} for i in range(0, len(buttons), MAX_ACTIONS)]


def _heading(item: dict, ids: _Ids) -> dict:
    label = rc.title(item)
    if rc.is_plain_label(label):
        text = {"type": "mrkdwn", "text": f"*{escape(label)}*"}
    else:
        text = plain(label)
    link = {"type": "button", "text": plain("NICE website"), "url": rc.link(item),
            "action_id": ids.next(LINK_ACTION_PREFIX)}
    return {"type": "section", "text": text, "accessory": link}


def answer_blocks(item: dict, ids: _Ids) -> list:
    """ID, year and strength; where it sits; the exact text; a link to it on the NICE website."""
    return [_heading(item, ids),
            {"type": "context", "elements": [plain(rc.where(item))]},
            *_sections(item["text"])]


def _more_blocks(view: rc.View, ids: _Ids) -> list:
    if not view.more:
        return []
    blocks: list = [{"type": "context", "elements": [plain(view.more_label)]}]
    if not view.full:   # a list of headings only: say what each one is before its button
        listing = "\n".join(f"{rc.title(a)} — {rc.where(a)}" for a in view.more)
        blocks += _sections(listing)
    blocks += _actions([_button(rc.button_title(a), rc.lookup_payload(a["id"]), ids) for a in view.more])
    return blocks


def _build(view: rc.View, full: list, more: list, selected: str | None, shortened: bool) -> list:
    ids = _Ids()
    v = rc.View(view.kind, view.text, intro=view.intro, notes=view.notes, full=full, more=more,
                more_label=view.more_label, question=view.question, options=view.options, reason=view.reason)
    blocks: list = []
    if selected:
        blocks.append({"type": "context", "elements": [plain(f"Selected: {selected}")]})
    if v.kind == "abstain":
        blocks.append({"type": "header", "text": plain(rc.NO_RECOMMENDATION)})
    for note in v.notes:
        blocks += _sections(note)
    if v.kind == "clarify":
        blocks += _sections(v.question)
        blocks += _actions([_button(o["title"], o["payload"], ids) for o in v.options])
    if v.intro:
        blocks += _sections(v.intro)
    if v.kind == "text" and v.options:
        blocks += _actions([_button(o["title"], o["payload"], ids) for o in v.options])
    if v.kind == "clarify" and full:
        blocks.append({"type": "context", "elements": [plain(rc.CANDIDATES_LINE)]})
    for i, item in enumerate(full):
        if i or blocks:
            blocks.append({"type": "divider"})
        blocks += answer_blocks(item, ids)
    blocks += _more_blocks(v, ids)
    if shortened:
        blocks.append({"type": "context", "elements": [plain(SHORTENED)]})
    return blocks


def render_message(message: dict, selected: str | None = None) -> dict:
    """chat.postMessage arguments (text, blocks) for one bot message; `selected` echoes a clicked button."""
    view = rc.view(message)
    full, more = list(view.full), list(view.more)
    blocks = _build(view, full, more, selected, False)
    # Over the block limit: later answers become look-up buttons (still one click away).
    while len(blocks) > MAX_BLOCKS and len(full) > 1:
        more.insert(0, full.pop())
        blocks = _build(view, full, more, selected, True)
    if len(blocks) > MAX_BLOCKS:
        blocks = blocks[: MAX_BLOCKS - 1] + [{"type": "context", "elements": [plain(SHORTENED)]}]
    fallback = view.text or (rc.NO_RECOMMENDATION if view.kind == "abstain" else "")
    if selected:
        fallback = f"Selected: {selected}\n{fallback}" if fallback else f"Selected: {selected}"
    return {"text": escape(_truncate(fallback or " ", MAX_FALLBACK_CHARS)), "blocks": blocks}


def render_turn(messages: list, selected: str | None = None) -> list:
    """One chat.postMessage argument set per bot message of the turn."""
    posts = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        if not (message.get("text") or rc.guideline_payload(message) or message.get("buttons")):
            continue
        posts.append(render_message(message, selected=selected if i == 0 else None))
    return posts


def fallback_only(post: dict) -> dict:
    """The same message as plain text only: what is posted if Slack refuses the blocks."""
    return {"text": post.get("text") or " "}
