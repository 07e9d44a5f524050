"""Slack connector: our channel on a real HTTP server, talking to a fake Slack (real HTTP + WebSocket servers).

Covers what Rasa's own Slack connector tests cover (signature checks, metadata, mention sanitisation, bot
messages, interactive payloads, text / buttons / threads on the way out) and what this issue adds: stale
signatures, retries answered once, conversation identity, Socket Mode, bad input and failed turns.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid

import pytest

pytestmark = pytest.mark.rasa
pytest.importorskip("rasa")
pytest.importorskip("slack_sdk")

from fakes.harness import ScriptedAgent, ServerUnderTest, http  # noqa: E402
from fakes.loop import LoopThread, free_port  # noqa: E402
from fakes.slack import (  # noqa: E402
    BOT_USER,
    TEAM,
    FakeSlack,
    block_action,
    direct,
    event_envelope,
    form_body,
    mention,
    sign,
    socket_envelope,
)

from assistant import answer  # noqa: E402
from assistant.rasa import render_slack  # noqa: E402
from assistant.rasa.slack import SlackConfig, SlackInput, sanitize, valid_blocks  # noqa: E402

SECRET = secrets.token_hex(16)


@pytest.fixture(scope="module")
def env():
    loop = LoopThread()
    fake = loop.run(FakeSlack(f"xoxb-{uuid.uuid4().hex}", f"xapp-{uuid.uuid4().hex}").start())
    agent = ScriptedAgent()
    config = SlackConfig(bot_token=fake.bot_token, signing_secret=SECRET, app_token=fake.app_token,
                         api_url=fake.api_url, turn_timeout=1.5, http_timeout=5.0)
    channel = SlackInput(config)
    server = loop.run(ServerUnderTest([channel], agent, free_port()).start())
    deadline = time.monotonic() + 20
    while not fake.connected() and time.monotonic() < deadline:   # Socket Mode connects out at start
        time.sleep(0.05)
    yield {"loop": loop, "fake": fake, "agent": agent, "server": server, "channel": channel,
           "url": f"{server.base}/webhooks/slack/webhook"}
    loop.run(server.stop())
    loop.run(fake.stop())
    loop.stop()


@pytest.fixture(autouse=True)
def reset_agent(env):
    env["agent"].mode, env["agent"].delay = "ok", 0.0
    env["fake"].refuse_blocks = False
    yield


def send(env, payload: dict, secret: str = SECRET, headers: dict | None = None, ts: int | None = None) -> tuple:
    body = json.dumps(payload).encode()
    return http("POST", env["url"], body, {"Content-Type": "application/json", **sign(secret, body, ts),
                                           **(headers or {})})


def click(env, payload: dict) -> tuple:
    body = form_body(payload)
    return http("POST", env["url"], body, {"Content-Type": "application/x-www-form-urlencoded", **sign(SECRET, body)})


def posts_to(env, channel: str, n: int = 1, timeout: float = 15.0) -> list:
    found = env["fake"].posts.wait_count(lambda p: p["body"].get("channel") == channel, n, timeout)
    assert len(found) >= n, f"expected {n} post(s) to {channel}, got {len(found)}"
    return [p["body"] for p in found]


def no_posts_to(env, channel: str, wait: float = 0.5) -> bool:
    time.sleep(wait)
    return not env["fake"].posts.matching(lambda p: p["body"].get("channel") == channel)


def shown_text(post: dict) -> str:
    return "\n".join(render_slack.unescape(b["text"]["text"]) for b in post.get("blocks", [])
                     if b["type"] == "section" and b["text"]["type"] == "plain_text")


def first_id(post: dict) -> str | None:
    heads = [b["text"]["text"] for b in post.get("blocks", []) if b["type"] == "section" and b.get("accessory")]
    return heads[0].strip("*").split()[0] if heads else None


def new_channel(prefix: str = "C") -> str:
    return f"{prefix}{uuid.uuid4().hex[:9].upper()}"


# ---------------------------------------------------------------------- signatures and the challenge
def test_url_verification_challenge(env):
    status, body, _ = send(env, {"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                                 "type": "url_verification"})
    assert (status, body) == (200, {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})


def test_good_signature_is_answered_in_a_thread_with_the_exact_text(env, corpus_by_id):
    channel = new_channel()
    event = mention("should I monitor with PET-CT?", "U0000001", channel)
    status, body, _ = send(env, event_envelope(event))
    assert status == 200 and body["handled"] == "accepted"
    [post] = posts_to(env, channel)
    assert post["thread_ts"] == event["ts"]
    assert first_id(post) == "1.1.8" and shown_text(post) == corpus_by_id["1.1.8"]["text"]
    assert post["mrkdwn"] is False and post["unfurl_links"] is False and valid_blocks(post["blocks"])
    assert corpus_by_id["1.1.8"]["text"] in render_slack.unescape(post["text"])


@pytest.mark.parametrize("case", ["wrong secret", "stale", "future", "no headers", "tampered body",
                                  "timestamp not a number", "not v0"])
def test_bad_or_stale_signatures_are_refused(env, case):
    channel = new_channel()
    payload = event_envelope(mention("bone mets imaging?", "U0000002", channel))
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", **sign(SECRET, body)}
    if case == "wrong secret":
        headers.update(sign("not-the-secret", body))
    elif case == "stale":
        headers.update(sign(SECRET, body, int(time.time()) - 301))
    elif case == "future":
        headers.update(sign(SECRET, body, int(time.time()) + 301))
    elif case == "no headers":
        headers = {"Content-Type": "application/json"}
    elif case == "tampered body":
        body = body.replace(b"bone", b"BONE")
    elif case == "timestamp not a number":
        headers["X-Slack-Request-Timestamp"] = "yesterday"
    elif case == "not v0":
        headers["X-Slack-Signature"] = headers["X-Slack-Signature"].replace("v0=", "v1=")
    status, reply, _ = http("POST", env["url"], body, headers)
    assert status == 401 and "signature" in reply["error"]
    assert no_posts_to(env, channel, wait=0.2)


def test_signature_just_inside_the_five_minute_window_is_accepted(env):
    status, _, _ = send(env, {"type": "url_verification", "challenge": "c"}, ts=int(time.time()) - 290)
    assert status == 200


# ---------------------------------------------------------------------- retries and duplicates
def test_a_retried_event_is_answered_once(env):
    channel = new_channel()
    envelope = event_envelope(mention("should I monitor with PET-CT?", "U0000003", channel))
    assert send(env, envelope)[1]["handled"] == "accepted"
    for n in (1, 2):
        status, body, _ = send(env, envelope, headers={"X-Slack-Retry-Num": str(n),
                                                       "X-Slack-Retry-Reason": "http_timeout"})
        assert (status, body["handled"]) == (200, "duplicate")
    posts_to(env, channel)
    time.sleep(0.5)
    assert len(env["fake"].posts.matching(lambda p: p["body"].get("channel") == channel)) == 1


def test_the_same_message_as_im_and_mention_is_answered_once(env):
    channel = new_channel("D")
    ts = f"{time.time():.6f}"
    im = direct(f"<@{BOT_USER}> should I monitor with PET-CT?", "U0000004", channel, ts=ts)
    assert send(env, event_envelope(im))[1]["handled"] == "accepted"
    as_mention = mention("should I monitor with PET-CT?", "U0000004", channel, ts=ts)
    assert send(env, event_envelope(as_mention))[1]["handled"] == "duplicate"
    posts_to(env, channel)
    assert not env["agent"].received[-1]["text"].startswith("<@")


# ---------------------------------------------------------------------- what is ignored
@pytest.mark.parametrize("change,reason", [
    ({"bot_id": "B999"}, "bot message"),
    ({"subtype": "bot_message", "bot_id": "B999"}, "bot message"),
    ({"user": BOT_USER}, "own message"),
    ({"subtype": "message_changed"}, "subtype message_changed"),
    ({"subtype": "message_deleted"}, "subtype message_deleted"),
    ({"subtype": "channel_join"}, "subtype channel_join"),
    ({"type": "reaction_added"}, "event type reaction_added"),
    ({"user": None}, "no user"),
    ({"channel": None}, "missing channel or ts"),
    ({"hidden": True}, "hidden"),
])
def test_bot_edited_deleted_and_unknown_events_are_ignored(env, change, reason):
    channel = new_channel("D")
    event = {k: v for k, v in {**direct("should I monitor with PET-CT?", "U0000005", channel), **change}.items()
             if v is not None}
    status, body, _ = send(env, event_envelope(event))
    assert (status, body["handled"], body["reason"]) == (200, "ignored", reason)
    assert no_posts_to(env, channel, wait=0.2)


def test_channel_messages_without_a_mention_are_ignored(env):
    channel = new_channel()
    event = {"type": "message", "channel_type": "channel", "user": "U0000006", "text": "PET-CT?", "channel": channel,
             "ts": f"{time.time():.6f}"}
    assert send(env, event_envelope(event))[1] == {"ok": True, "handled": "ignored",
                                                   "reason": "channel message without a mention"}


def test_unknown_envelope_types_are_acknowledged_and_ignored(env):
    status, body, _ = send(env, {"type": "app_rate_limited", "team_id": TEAM, "minute_rate_limited": 1518467820})
    assert (status, body["handled"]) == (200, "ignored")


# ---------------------------------------------------------------------- mentions and text
def test_the_mention_is_stripped_before_nlu_and_metadata_says_where(env):
    channel = new_channel()
    send(env, event_envelope(mention("should I monitor with PET-CT?", "U0000007", channel)))
    posts_to(env, channel)
    seen = [r for r in env["agent"].received if r["text"] == "should I monitor with PET-CT?"]
    assert seen and seen[-1]["channel"] == "slack"
    assert seen[-1]["metadata"] == {"platform": "slack", "conversation": "channel"}


def test_a_message_that_is_only_a_mention_gets_the_prompt_not_nlu(env):
    channel = new_channel()
    received = len(env["agent"].received)
    event = {"type": "app_mention", "user": "U0000008", "text": f"<@{BOT_USER}>", "channel": channel,
             "ts": f"{time.time():.6f}"}
    assert send(env, event_envelope(event))[1]["handled"] == "accepted"
    [post] = posts_to(env, channel)
    assert shown_text(post) == answer.EMPTY_MESSAGE and post["thread_ts"] == event["ts"]
    assert len(env["agent"].received) == received


def test_files_alone_are_ignored_but_a_question_with_a_file_is_answered(env):
    channel = new_channel("D")
    files = [{"id": "F1", "name": "scan.png", "mimetype": "image/png"}]
    only = direct("", "U0000009", channel, subtype="file_share", files=files)
    assert send(env, event_envelope(only))[1]["reason"] == "files only"
    with_text = direct("should I monitor with PET-CT?", "U0000009", channel, subtype="file_share", files=files)
    assert send(env, event_envelope(with_text))[1]["handled"] == "accepted"
    assert first_id(posts_to(env, channel)[0]) == "1.1.8"


@pytest.mark.parametrize("raw,expected", [
    ("You can sit here {uid} if you want{uid}", "You can sit here if you want"),
    ("{uid} You can sit here if you want{uid} ", "You can sit here if you want"),
    ("{uid}You can sit here if you want {uid}", "You can sit here if you want"),
    ("You can sit here{uid}if you want", "You can sit here if you want"),
    ("Hey {uid}, you can sit here if you want{uid}!", "Hey, you can sit here if you want !"),
    ("Hey{uid} , you can sit here if you want {uid}!", "Hey, you can sit here if you want!"),
    ("convert garbled url to <http://vicdb-f.net|vicdb-f.net>", "convert garbled url to vicdb-f.net"),
    ("multiple <http://vicdb-f.net|vicdb-f.net>. Also <http://eemdb-p.net|eemdb-p.net>",
     "multiple vicdb-f.net. Also eemdb-p.net"),
    ("{uid} ask <@U0OTHER|sam> about <#C0123|oncology> <!here> tumours &lt;2 cm &amp; mets",
     "ask about #oncology tumours <2 cm & mets"),
    ("mail <mailto:a@nhs.net|a@nhs.net> or see <https://www.nice.org.uk>", "mail a@nhs.net or see https://www.nice.org.uk"),
    ("<@UB0T0001|cg81> dose?", "dose?"),
])
def test_message_sanitisation(raw, expected):
    assert sanitize(raw.format(uid=f"<@{BOT_USER}>"), {BOT_USER}) == expected


# ---------------------------------------------------------------------- conversation identity
def test_a_follow_up_in_the_thread_keeps_the_context_and_another_thread_does_not(env):
    channel = new_channel()
    first = mention("first line endocrine therapy for a postmenopausal woman with ER+ MBC", "U0000010", channel)
    send(env, event_envelope(first))
    posts_to(env, channel, 1)
    follow = mention("and for men?", "U0000011", channel, thread_ts=first["ts"])   # a colleague, same thread
    send(env, event_envelope(follow))
    other = mention("and for men?", "U0000010", channel)                           # same clinician, new thread
    send(env, event_envelope(other))
    posts = posts_to(env, channel, 3)
    by_thread = {}
    for p in posts:
        by_thread.setdefault(p["thread_ts"], []).append(p)
    assert [first_id(p) for p in by_thread[first["ts"]]] == ["1.3.4", "1.3.7"]
    [elsewhere] = by_thread[other["ts"]]
    assert first_id(elsewhere) is None and "No recommendation in CG81" in json.dumps(elsewhere["blocks"])


def test_two_clinicians_in_one_channel_never_share_a_conversation(env):
    channel = new_channel()
    a = mention("first line endocrine therapy for a postmenopausal woman", "U0000012", channel)
    b = mention("should I monitor with PET-CT?", "U0000013", channel)
    send(env, event_envelope(a))
    send(env, event_envelope(b))
    posts_to(env, channel, 2)
    senders = {r["sender"] for r in env["agent"].received[-2:]}
    assert len(senders) == 2


def test_direct_messages_are_one_conversation_per_user(env):
    channel = new_channel("D")
    send(env, event_envelope(direct("first line endocrine therapy for a postmenopausal woman", "U0000014", channel)))
    posts_to(env, channel, 1)
    send(env, event_envelope(direct("and for men?", "U0000014", channel)))
    posts = posts_to(env, channel, 2)
    assert [first_id(p) for p in posts] == ["1.3.4", "1.3.7"]
    assert all("thread_ts" not in p for p in posts)
    other_dm = new_channel("D")
    send(env, event_envelope(direct("and for men?", "U0000015", other_dm)))
    assert first_id(posts_to(env, other_dm)[0]) is None


# ---------------------------------------------------------------------- buttons
def test_a_clarification_button_click_continues_the_same_thread(env):
    channel = new_channel()
    question = mention("which endocrine therapy for ER positive advanced breast cancer?", "U0000016", channel)
    send(env, event_envelope(question))
    [post] = posts_to(env, channel, 1)
    buttons = [e for b in post["blocks"] if b["type"] == "actions" for e in b["elements"]]
    choice = next(b for b in buttons if b["text"]["text"] == "Postmenopausal woman")
    bot_ts = f"{time.time():.6f}"
    payload = block_action(choice["value"], choice["text"]["text"], "U0000017", channel, bot_ts,
                           thread_ts=question["ts"], action_id=choice["action_id"])
    status, body, _ = click(env, payload)
    assert (status, body["handled"]) == (200, "accepted")
    answer_post = posts_to(env, channel, 2)[1]
    assert answer_post["thread_ts"] == question["ts"] and first_id(answer_post) == "1.3.4"
    assert answer_post["blocks"][0]["elements"][0]["text"] == "Selected: Postmenopausal woman"
    assert env["agent"].received[-1]["sender"] == env["agent"].received[-2]["sender"]
    assert click(env, payload)[1]["handled"] == "duplicate"          # a double click or a retry


def test_also_relevant_buttons_look_the_recommendation_up(env, corpus_by_id):
    channel = new_channel("D")
    send(env, event_envelope(direct("first line endocrine therapy for a postmenopausal woman", "U0000018", channel)))
    [post] = posts_to(env, channel, 1)
    button = [e for b in post["blocks"] if b["type"] == "actions" for e in b["elements"]][0]
    click(env, block_action(button["value"], button["text"]["text"], "U0000018", channel, f"{time.time():.6f}",
                            action_id=button["action_id"]))
    looked_up = posts_to(env, channel, 2)[1]
    assert first_id(looked_up) == "1.3.5" and shown_text(looked_up).endswith(corpus_by_id["1.3.5"]["text"])


def test_link_buttons_and_other_interactions_are_acknowledged_only(env):
    channel = new_channel("D")
    link = block_action("", "NICE website", "U0000019", channel, f"{time.time():.6f}", action_id="cg81_link_1")
    assert click(env, link)[1]["reason"] == "link button"
    shortcut = {"type": "shortcut", "callback_id": "x", "user": {"id": "U0000019"}}
    assert click(env, shortcut)[1]["reason"] == "interaction type shortcut"
    assert no_posts_to(env, channel, wait=0.2)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("body,ctype,status", [
    (b"{not json", "application/json", 400),
    (b"[1, 2]", "application/json", 400),
    (b"payload=%7Bnot-json", "application/x-www-form-urlencoded", 400),
    (b"nothing=here", "application/x-www-form-urlencoded", 400),
    (b'{"type": "event_callback"}', "application/json", 200),
    (b'{"type": "event_callback", "event": "text"}', "application/json", 200),
])
def test_malformed_bodies_get_4xx_or_are_ignored(env, body, ctype, status):
    got, reply, _ = http("POST", env["url"], body, {"Content-Type": ctype, **sign(SECRET, body)})
    assert got == status
    assert ("error" in reply) if status == 400 else reply["handled"] == "ignored"


def test_a_body_that_is_not_utf8_cannot_carry_a_valid_signature(env):
    body = b"\xff\xfe"
    status, reply, _ = http("POST", env["url"], body, {"Content-Type": "application/json", **sign(SECRET, body)})
    assert status == 401


def test_bodies_over_one_megabyte_are_refused(env):
    body = json.dumps({"type": "event_callback", "pad": "x" * (1024 * 1024)}).encode()
    status, reply, _ = http("POST", env["url"], body, {"Content-Type": "application/json", **sign(SECRET, body)})
    assert status == 413 and "bytes" in reply["error"]


# ---------------------------------------------------------------------- failures become a clear message
@pytest.mark.parametrize("mode", ["raise", "hang", "silent"])
def test_a_failed_or_stalled_turn_says_no_recommendation_was_given(env, mode):
    env["agent"].mode = mode
    channel = new_channel()
    t0 = time.monotonic()
    send(env, event_envelope(mention("bone mets imaging?", "U0000020", channel)))
    [post] = posts_to(env, channel)
    assert time.monotonic() - t0 < 10
    assert render_slack.unescape(post["text"]) == answer.SERVICE_UNAVAILABLE == shown_text(post)


def test_the_acknowledgement_does_not_wait_for_the_turn(env):
    env["agent"].delay = 1.0
    channel = new_channel("D")
    t0 = time.monotonic()
    status, body, _ = send(env, event_envelope(direct("should I monitor with PET-CT?", "U0000021", channel)))
    assert status == 200 and time.monotonic() - t0 < 0.8
    posts_to(env, channel)


def test_blocks_slack_refuses_fall_back_to_text(env, corpus_by_id):
    env["fake"].refuse_blocks = True
    channel = new_channel("D")
    send(env, event_envelope(direct("should I monitor with PET-CT?", "U0000022", channel)))
    posted = posts_to(env, channel, 2)
    assert posted[0].get("blocks") and "blocks" not in posted[1]
    assert corpus_by_id["1.1.8"]["text"] in render_slack.unescape(posted[1]["text"])


# ---------------------------------------------------------------------- Socket Mode
def test_socket_mode_message_is_acknowledged_and_answered_once(env, corpus_by_id):
    fake, channel = env["fake"], new_channel("D")
    envelope_payload = event_envelope(direct("should I monitor with PET-CT?", "U0000023", channel))
    first = socket_envelope(envelope_payload)
    env["loop"].run(fake.push(first))
    assert fake.acks.wait(lambda a: a["envelope_id"] == first["envelope_id"], 10)
    [post] = posts_to(env, channel)
    assert shown_text(post) == corpus_by_id["1.1.8"]["text"]
    retry = socket_envelope(envelope_payload, retry_attempt=1)
    env["loop"].run(fake.push(retry))
    assert fake.acks.wait(lambda a: a["envelope_id"] == retry["envelope_id"], 10)
    time.sleep(0.4)
    assert len(fake.posts.matching(lambda p: p["body"].get("channel") == channel)) == 1


def test_socket_mode_button_click(env):
    fake, channel = env["fake"], new_channel()
    question = mention("which endocrine therapy for ER positive advanced breast cancer?", "U0000024", channel)
    env["loop"].run(fake.push(socket_envelope(event_envelope(question))))
    posts_to(env, channel, 1)
    payload = block_action("Postmenopausal woman", "Postmenopausal woman", "U0000024", channel,
                           f"{time.time():.6f}", thread_ts=question["ts"])
    env["loop"].run(fake.push(socket_envelope(payload, kind="interactive")))
    assert first_id(posts_to(env, channel, 2)[1]) == "1.3.4"


# ---------------------------------------------------------------------- configuration
def test_from_credentials_reads_the_environment_and_logs_one_line(monkeypatch, caplog):
    for var in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "SLACK_API_URL"):
        monkeypatch.delenv(var, raising=False)
    with caplog.at_level(logging.INFO, logger="assistant.rasa.slack"):
        disabled = SlackInput.from_credentials({})
    assert not disabled.config.enabled
    assert [r.getMessage() for r in caplog.records if r.name == "assistant.rasa.slack"] == [
        "Slack channel disabled: set SLACK_BOT_TOKEN with SLACK_SIGNING_SECRET (Events API) and/or "
        "SLACK_APP_TOKEN (Socket Mode); /webhooks/slack/webhook answers 503"]
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "s")
    monkeypatch.setenv("SLACK_API_URL", "http://127.0.0.1:9/api")
    enabled = SlackInput.from_credentials(None)
    assert enabled.config.events_enabled and not enabled.config.socket_mode_enabled
    assert enabled.config.api_url == "http://127.0.0.1:9/api/"
    assert SlackConfig.from_env({"SLACK_BOT_TOKEN": "x", "SLACK_APP_TOKEN": "y"}).socket_mode_enabled
    assert SlackConfig.from_env({}).api_url == "https://slack.com/api/"


def test_a_disabled_channel_answers_503_and_the_server_runs(env):
    loop = env["loop"]
    server = loop.run(ServerUnderTest([SlackInput(SlackConfig())], ScriptedAgent(), free_port()).start())
    try:
        body = json.dumps({"type": "url_verification", "challenge": "c"}).encode()
        status, reply, _ = http("POST", f"{server.base}/webhooks/slack/webhook", body,
                                {"Content-Type": "application/json", **sign(SECRET, body)})
        assert status == 503 and "not configured" in reply["error"]
        assert http("GET", f"{server.base}/webhooks/slack/")[1]["status"] == "disabled"
    finally:
        loop.run(server.stop())


def test_every_kind_of_answer_passes_slack_sdks_block_kit_models(corpus_by_id):
    """The renderer's output, parsed and length-checked by slack_sdk's own Block Kit models."""
    records = list(corpus_by_id.values())
    items = [answer.answer_item(r, 0.5) for r in records]
    clar = {"question": "Has she previously been treated with tamoxifen?",
            "options": ["Previously treated with tamoxifen", "Not previously treated"]}
    long_item = {**items[0], "text": "\n".join("• " + "a < b & c > d " * 30 for _ in range(30))}
    messages = [
        {"text": answer.answer_text(items[:3]), "custom": answer.payload(items[:3])},
        {"text": answer.list_text(records), "custom": answer.payload(items)},              # every record
        {"text": answer.clarification_text(clar, items[:4]), "custom": answer.payload(items[:4], clarification=clar),
         "buttons": [{"title": o, "payload": o} for o in clar["options"]]},
        {"text": answer.abstention_text("no_answer"), "custom": answer.abstention_payload("no_answer")},
        {"text": answer.answer_text([long_item]), "custom": answer.payload([long_item])},
        {"text": answer.SERVICE_UNAVAILABLE},
    ]
    for message in messages:
        post = render_slack.render_message(message, selected="Previously treated with tamoxifen")
        assert valid_blocks(post["blocks"]), json.dumps(post["blocks"])[:500]


def test_block_kit_validation_catches_limit_violations():
    assert valid_blocks([{"type": "section", "text": {"type": "plain_text", "text": "ok"}}])
    assert not valid_blocks([{"type": "section", "text": {"type": "plain_text", "text": "x" * 3001}}])
    assert not valid_blocks([{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}])
    assert not valid_blocks([{"type": "divider"}] * 51)
