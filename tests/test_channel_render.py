"""Slack Block Kit and Teams Adaptive Card renderers: pure functions, so they run in both environments.

Messages are built the way the actions build them (the core's `assistant.answer` helpers over real
corpus records), so what is checked here is what a clinician would see.
"""

from __future__ import annotations

import json

import pytest

from assistant import answer
from assistant.links import nice_url
from assistant.rasa import render_common as rc
from assistant.rasa import render_slack, render_teams

pytestmark = pytest.mark.portable

TRICKY = ("Use A & B when <5 cm or >2 cm; *not bold*, _not italic_, ~not struck~ and `not code` stay as typed:\n"
          "• first <@U123> bullet & more\n• 1. not a list\n• :smile: is not an emoji")


@pytest.fixture(scope="module")
def item(corpus_by_id):
    return lambda rec_id, score=0.8: answer.answer_item(corpus_by_id[rec_id], score)


def answer_message(items, notes=None, missing=None) -> dict:
    return {"text": answer.answer_text(items, missing=missing, notes=notes),
            "custom": answer.payload(items, notes=notes)}


def tricky_item(item) -> dict:
    return {**item("1.3.4"), "id": "9.9.9", "text": TRICKY}


# ---------------------------------------------------------------------- Slack helpers
def slack_texts(blocks: list) -> list:
    """Every text object in the blocks, in order."""
    out = []
    for b in blocks:
        if isinstance(b.get("text"), dict):
            out.append(b["text"])
        for e in b.get("elements", []) if b["type"] == "context" else []:
            out.append(e)
    return out


def slack_body_text(blocks: list) -> str:
    """The plain-text sections after the first heading, unescaped and joined: what Slack displays."""
    return "\n".join(render_slack.unescape(t["text"]) for b in blocks if b["type"] == "section"
                     for t in [b["text"]] if t["type"] == "plain_text")


def slack_buttons(blocks: list) -> list:
    return [e for b in blocks if b["type"] == "actions" for e in b["elements"]]


def assert_slack_limits(post: dict) -> None:
    blocks = post["blocks"]
    assert post["text"].strip()
    assert 0 < len(blocks) <= render_slack.MAX_BLOCKS
    ids = []
    for b in blocks:
        if b["type"] == "section":
            assert len(b["text"]["text"]) <= render_slack.MAX_SECTION_CHARS
        if b["type"] == "header":
            assert len(b["text"]["text"]) <= render_slack.MAX_HEADER_CHARS
        if b["type"] == "context":
            assert 1 <= len(b["elements"]) <= render_slack.MAX_CONTEXT_ELEMENTS
        if b["type"] == "actions":
            assert 1 <= len(b["elements"]) <= render_slack.MAX_ACTIONS
        for e in ([b["accessory"]] if b.get("accessory") else []) + (b["elements"] if b["type"] == "actions" else []):
            assert len(e["text"]["text"]) <= render_slack.MAX_BUTTON_TEXT
            assert len(e.get("value", "")) <= render_slack.MAX_BUTTON_VALUE
            ids.append(e["action_id"])
    assert len(ids) == len(set(ids)), "action_id must be unique within a message"


# ---------------------------------------------------------------------- Slack
def test_slack_answer_shows_id_year_strength_section_exact_text_and_link(item, corpus_by_id):
    items = [item("1.3.4"), item("1.3.5"), item("1.3.7")]
    post = render_slack.render_message(answer_message(items))
    blocks = post["blocks"]
    assert_slack_limits(post)
    assert blocks[0]["text"] == {"type": "mrkdwn", "text": "*1.3.4 [2009] · Offer*"}
    assert blocks[0]["accessory"]["url"] == nice_url(items[0]) == \
        "https://www.nice.org.uk/guidance/cg81/chapter/Recommendations#endocrine-therapy"
    assert blocks[1]["elements"][0]["text"] == \
        "NICE CG81 · section 1.3 Systemic disease-modifying therapy › Endocrine therapy"
    assert slack_body_text(blocks) == corpus_by_id["1.3.4"]["text"]      # bullets and line breaks kept
    assert "\n• postmenopausal women" in slack_body_text(blocks)
    also = slack_buttons(blocks)
    assert [(b["text"]["text"], b["value"]) for b in also] == [("1.3.5", "show 1.3.5"), ("1.3.7", "show 1.3.7")]
    assert all(b["action_id"].startswith(render_slack.REPLY_ACTION_PREFIX) for b in also)
    assert blocks[0]["accessory"]["action_id"].startswith(render_slack.LINK_ACTION_PREFIX)
    assert "Also relevant:" in [e["text"] for b in blocks if b["type"] == "context" for e in b["elements"]]
    assert render_slack.unescape(post["text"]) == answer.answer_text(items)


@pytest.mark.parametrize("strength,label", [("offer", "Offer"), ("consider", "Consider"), ("do not", "Do not"),
                                            ("other", "Other wording")])
def test_strength_labels(item, strength, label):
    rec = {**item("1.1.8"), "strength": strength}
    post = render_slack.render_message(answer_message([rec]))
    assert post["blocks"][0]["text"]["text"] == f"*1.1.8 [{rec['year']}] · {label}*"


def test_research_recommendation_is_labelled_and_linked(item):
    rr = item("RR1")
    post = render_slack.render_message(answer_message([rr]))
    assert post["blocks"][0]["text"]["text"] == f"*RR1 [{rr['year']}] · Research recommendation*"
    assert post["blocks"][0]["accessory"]["url"].startswith(
        "https://www.nice.org.uk/guidance/cg81/chapter/Recommendations-for-research")
    assert post["blocks"][1]["elements"][0]["text"].startswith("NICE CG81 · Recommendations for research")


def test_slack_escapes_control_characters_and_never_formats_corpus_text(item):
    tricky = tricky_item(item)
    post = render_slack.render_message(answer_message([tricky]))
    assert_slack_limits(post)
    body = [t for t in slack_texts(post["blocks"]) if "bullet" in render_slack.unescape(t["text"])]
    assert len(body) == 1
    # plain_text: Slack applies no formatting, and the emoji shortcode is not converted.
    assert body[0] == {"type": "plain_text", "emoji": False, "text": (
        "Use A &amp; B when &lt;5 cm or &gt;2 cm; *not bold*, _not italic_, ~not struck~ and `not code` stay as "
        "typed:\n• first &lt;@U123&gt; bullet &amp; more\n• 1. not a list\n• :smile: is not an emoji")}
    assert render_slack.unescape(body[0]["text"]) == TRICKY
    # Only our own labels are mrkdwn, and they hold no formatting or control character.
    for t in slack_texts(post["blocks"]):
        if t["type"] == "mrkdwn":
            inner = t["text"].strip("*")
            assert rc.is_plain_label(inner), t
    assert "<" not in post["text"] and ">" not in post["text"] and "&amp;" in post["text"]


def test_slack_long_text_is_split_into_sections_within_the_limit(item):
    long_text = "\n".join(f"• line {i} " + "x & y " * 40 for i in range(40))
    post = render_slack.render_message(answer_message([{**item("1.3.4"), "text": long_text}]))
    assert_slack_limits(post)
    sections = [b for b in post["blocks"] if b["type"] == "section" and b["text"]["type"] == "plain_text"]
    assert len(sections) > 1
    assert "\n".join(render_slack.unescape(s["text"]["text"]) for s in sections) == long_text


def test_slack_many_answers_stay_within_50_blocks(item, corpus_by_id):
    records = list(corpus_by_id.values())[:30]
    items = [answer.answer_item(r, None) for r in records]
    post = render_slack.render_message({"text": answer.list_text(records), "custom": answer.payload(items)})
    assert_slack_limits(post)
    shown = [b["text"]["text"].strip("*").split(" ")[0] for b in post["blocks"]
             if b["type"] == "section" and b.get("accessory")]
    offered = [b["value"].split()[-1] for b in slack_buttons(post["blocks"])]
    assert shown and offered and shown + offered == [r["id"] for r in records]   # nothing lost, order kept
    assert render_slack.SHORTENED in json.dumps(post["blocks"])


def test_slack_listing_shows_every_recommendation_in_full(corpus_by_id):
    ids = ["1.5.18", "1.5.19", "1.5.20", "1.5.21"]
    records = [corpus_by_id[i] for i in ids]
    post = render_slack.render_message({"text": answer.list_text(records),
                                        "custom": answer.payload([answer.answer_item(r, None) for r in records])})
    headings = [b["text"]["text"] for b in post["blocks"] if b["type"] == "section" and b.get("accessory")]
    assert [h.strip("*").split()[0] for h in headings] == ids
    assert not slack_buttons(post["blocks"])
    assert post["blocks"][0]["text"]["text"] == "4 NICE CG81 recommendations:"
    for r in records:
        assert r["text"] in slack_body_text(post["blocks"])


def test_slack_clarification_buttons_carry_the_payload_and_candidates_follow(item):
    clar = {"question": "Is this a postmenopausal woman, a premenopausal or perimenopausal woman, or a man?",
            "options": ["Postmenopausal woman", "Premenopausal or perimenopausal woman", "Man"]}
    items = [item("1.3.4"), item("1.3.5"), item("1.3.7")]
    buttons = [{"title": o, "payload": f"/choose{{\"option\": \"{o}\"}}"} for o in clar["options"]]
    post = render_slack.render_message({"text": answer.clarification_text(clar, items), "buttons": buttons,
                                        "custom": answer.payload(items, clarification=clar)})
    assert_slack_limits(post)
    blocks = post["blocks"]
    assert render_slack.unescape(blocks[0]["text"]["text"]) == clar["question"]
    assert blocks[1]["type"] == "actions"
    assert [(b["text"]["text"], b["value"]) for b in blocks[1]["elements"]] == \
        [(b["title"], b["payload"]) for b in buttons]
    headings = [b["text"]["text"] for b in blocks if b["type"] == "section" and b.get("accessory")]
    assert [h.strip("*").split()[0] for h in headings] == ["1.3.4", "1.3.5", "1.3.7"]
    assert rc.CANDIDATES_LINE in json.dumps(blocks)


def test_slack_abstention_is_marked_no_recommendation_in_cg81():
    reason = "out_of_scope:oos_dosing"
    post = render_slack.render_message({"text": answer.abstention_text(reason),
                                        "custom": answer.abstention_payload(reason)})
    assert post["blocks"][0] == {"type": "header", "text": {"type": "plain_text", "text": "No recommendation in CG81",
                                                            "emoji": False}}
    assert render_slack.unescape(post["blocks"][1]["text"]["text"]) == answer.abstention_text(reason)


def test_a_service_failure_is_not_dressed_up_as_an_abstention():
    post = render_slack.render_message({"text": answer.SERVICE_UNAVAILABLE,
                                        "custom": answer.abstention_payload("service_error")})
    assert rc.NO_RECOMMENDATION not in json.dumps(post)
    assert slack_body_text(post["blocks"]) == answer.SERVICE_UNAVAILABLE


def test_slack_notes_and_unknown_ids_are_kept(item):
    items = [item("1.3.4")]
    notes = [answer.menopause_note("postmenopausal", 62)]
    post = render_slack.render_message(answer_message(items, notes=notes, missing=["9.9.9"]))
    text = slack_body_text(post["blocks"])
    assert notes[0] in text and answer.unknown_ids_text(["9.9.9"]) in text
    assert text.count(items[0]["text"]) == 1


def test_slack_heading_only_list_offers_each_recommendation(corpus_by_id):
    records = [r for r in corpus_by_id.values() if r["year"] == 2009][:12]
    updates = {"notes": {"2009": "Original publication."}, "tags": {}}
    message = {"text": answer.update_text(2009, records, updates),
               "custom": answer.payload([answer.answer_item(r, None) for r in records])}
    post = render_slack.render_message(message)
    assert_slack_limits(post)
    assert [b["value"] for b in slack_buttons(post["blocks"])] == [f"show {r['id']}" for r in records]
    listing = slack_body_text(post["blocks"])
    assert "From the guideline's update information" in listing
    for r in records:
        assert f"{r['id']} [2009] ·" in listing


def test_slack_plain_text_with_buttons_and_selected_echo():
    post = render_slack.render_message({"text": "Hello!", "buttons": [{"title": "Help", "payload": "/help"}]},
                                       selected="Help")
    assert post["blocks"][0]["elements"][0]["text"] == "Selected: Help"
    assert slack_body_text(post["blocks"]) == "Hello!"
    assert [(b["text"]["text"], b["value"]) for b in slack_buttons(post["blocks"])] == [("Help", "/help")]


def test_render_turn_skips_messages_with_nothing_to_show():
    posts = render_slack.render_turn([{"custom": {"type": "other"}}, {"text": "hi"}, "junk", {}])
    assert len(posts) == 1 and slack_body_text(posts[0]["blocks"]) == "hi"
    assert render_teams.render_turn([{"image": "x"}, {"text": "hi"}]) == [
        {"type": "message", "text": "hi", "textFormat": "plain"}]


# ---------------------------------------------------------------------- Teams
def card_of(activity: dict) -> dict:
    [attachment] = activity["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    return attachment["content"]


def walk(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def runs(card: dict) -> list:
    return [n["text"] for n in walk(card) if n.get("type") == "TextRun"]


def containers(card: dict) -> list:
    return [n for n in card["body"] if n.get("type") == "Container" and n.get("items")
            and n["items"][0].get("type") == "RichTextBlock" and len(n["items"]) > 2]


def container_text(container: dict) -> str:
    return "\n".join(b["inlines"][0]["text"] for b in container["items"][2:] if b["type"] == "RichTextBlock")


def test_teams_answer_card_title_text_section_link_and_also_relevant(item, corpus_by_id):
    items = [item("1.3.4"), item("1.3.5"), item("1.3.7")]
    act = render_teams.render_message(answer_message(items))
    card = card_of(act)
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["fallbackText"] == answer.answer_text(items)
    [box] = containers(card)
    assert box["items"][0]["inlines"][0] == {"type": "TextRun", "text": "1.3.4 [2009] · Offer", "weight": "Bolder",
                                             "size": "Medium"}
    assert box["items"][1]["inlines"][0]["text"] == \
        "NICE CG81 · section 1.3 Systemic disease-modifying therapy › Endocrine therapy"
    assert container_text(box) == corpus_by_id["1.3.4"]["text"]
    [open_url] = [n for n in walk(box) if n.get("type") == "Action.OpenUrl"]
    assert open_url["url"] == nice_url(items[0])
    submits = [n for n in walk(card) if n.get("type") == "Action.Submit"]
    assert [(s["title"], s["data"]["cg81_reply"]) for s in submits] == [("1.3.5", "show 1.3.5"),
                                                                         ("1.3.7", "show 1.3.7")]
    assert act["summary"].startswith("NICE CG81 1.3.4: Offer an aromatase inhibitor")
    # Corpus text never goes into a TextBlock (which would interpret Markdown).
    assert not [n for n in walk(card) if n.get("type") == "TextBlock"]


def test_teams_keeps_markdown_characters_literal(item):
    card = card_of(render_teams.render_message(answer_message([tricky_item(item)])))
    [box] = containers(card)
    assert container_text(box) == TRICKY


def test_teams_clarification_and_abstention(item):
    clar = {"question": "Has she previously been treated with tamoxifen?",
            "options": ["Previously treated with tamoxifen", "Not previously treated"]}
    items = [item("1.3.4"), item("1.3.6")]
    act = render_teams.render_message({"text": answer.clarification_text(clar, items),
                                       "buttons": [{"title": o, "payload": o} for o in clar["options"]],
                                       "custom": answer.payload(items, clarification=clar)})
    card = card_of(act)
    assert card["body"][0]["inlines"][0]["text"] == clar["question"]
    assert card["body"][1]["type"] == "ActionSet"
    assert [(a["title"], a["data"]) for a in card["body"][1]["actions"]] == [
        (o, {"cg81_reply": o, "cg81_label": o}) for o in clar["options"]]
    assert act["summary"] == clar["question"]
    assert len(containers(card)) == 2

    reason = "out_of_scope:oos_cost"
    card = card_of(render_teams.render_message({"text": answer.abstention_text(reason),
                                                "custom": answer.abstention_payload(reason)}))
    assert card["body"][0]["style"] == "attention"
    assert runs(card)[0] == "No recommendation in CG81"
    assert "\n".join(runs(card)[1:]) == answer.abstention_text(reason)


def test_teams_plain_text_is_sent_as_plain_text():
    assert render_teams.render_message({"text": answer.SERVICE_UNAVAILABLE}) == {
        "type": "message", "text": answer.SERVICE_UNAVAILABLE, "textFormat": "plain"}


def test_teams_card_stays_under_the_size_limit(corpus_by_id):
    records = [{**r, "text": r["text"] + " " + "lorem ipsum " * 300} for r in list(corpus_by_id.values())[:20]]
    items = [answer.answer_item(r, None) for r in records]
    act = render_teams.render_message({"text": answer.list_text(records), "custom": answer.payload(items)})
    card = card_of(act)
    assert len(json.dumps(card, ensure_ascii=False).encode()) <= render_teams.MAX_CARD_BYTES
    shown = [c["items"][0]["inlines"][0]["text"].split()[0] for c in containers(card)]
    offered = [n["data"]["cg81_reply"].split()[-1] for n in walk(card) if n.get("type") == "Action.Submit"]
    assert shown + offered == [r["id"] for r in records]
    assert render_teams.SHORTENED in runs(card)


def test_teams_action_sets_hold_few_buttons(corpus_by_id):
    records = list(corpus_by_id.values())[:13]
    items = [answer.answer_item(r, None) for r in records]
    card = card_of(render_teams.render_message({"text": "", "custom": answer.payload(items)}))
    sets = [n for n in walk(card) if n.get("type") == "ActionSet" and n["actions"][0]["type"] == "Action.Submit"]
    assert all(len(s["actions"]) <= render_teams.MAX_ACTIONS_PER_SET for s in sets)
    assert sum(len(s["actions"]) for s in sets) == 12
