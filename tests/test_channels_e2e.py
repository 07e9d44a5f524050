"""End to end: the real Rasa server and action server (scripts/serve.sh, credentials.yml) with the Slack and
Teams channels enabled through the environment, against local fakes of Slack and Microsoft.

Needs a trained model and the index (`make test-channels` builds them first). Only Slack and Microsoft are
fake: NLU, dialogue, actions, the core and the payload are the real ones.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

pytestmark = pytest.mark.channels
pytest.importorskip("rasa")

from fakes.harness import http  # noqa: E402
from fakes.loop import LoopThread, free_port  # noqa: E402
from fakes.microsoft import FakeMicrosoft, activity  # noqa: E402
from fakes.slack import (  # noqa: E402
    FakeSlack,
    block_action,
    direct,
    event_envelope,
    form_body,
    mention,
    sign,
    socket_envelope,
)

from assistant import answer, config  # noqa: E402
from assistant.rasa import render_slack  # noqa: E402

ROOT = config.ROOT
MODEL = ROOT / "models" / "cg81.tar.gz"
REPLY_WITHIN = 30.0      # generous on a busy 2-core machine; the 10 s promise is asserted where it applies


# ---------------------------------------------------------------------- the stack
def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _logs(folder) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(folder.glob("*.log")))


def channel_env(slack: FakeSlack, ms: FakeMicrosoft, secret: str, **extra) -> dict:
    # CG81_ACTION_TOKEN: the action server's shared secret (kept if the caller set one).
    return dict(os.environ, CG81_ACTION_TOKEN=os.environ.get("CG81_ACTION_TOKEN") or secrets.token_hex(16),
                SLACK_BOT_TOKEN=slack.bot_token, SLACK_SIGNING_SECRET=secret,
                SLACK_APP_TOKEN=slack.app_token, SLACK_API_URL=slack.api_url, MICROSOFT_APP_ID=ms.app_id,
                MICROSOFT_APP_PASSWORD=ms.app_password, MICROSOFT_APP_TENANT_ID=ms.tenant,
                BOTFRAMEWORK_OPENID_METADATA_URL=ms.openid_url, MICROSOFT_LOGIN_URL=ms.login_url,
                RASA_TELEMETRY_ENABLED="false", TF_CPP_MIN_LOG_LEVEL="3", **extra)


def wait_channels_up(base: str, slack: FakeSlack, proc: subprocess.Popen, tmp, timeout: float = 60) -> None:
    """Socket Mode connected and the Teams signing keys loaded (both happen after the server starts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the servers stopped:\n{_logs(tmp)}")
        try:
            keys = http("GET", f"{base}/webhooks/teams/", timeout=2)[1].get("signing_keys", 0)
        except OSError:
            keys = 0
        if slack.connected() and keys:
            return
        time.sleep(0.2)
    pytest.fail(f"channels not up (socket mode {slack.connected()}):\n{_logs(tmp)}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if not MODEL.exists():
        pytest.fail("no trained model: run `make train` first")
    tmp = tmp_path_factory.mktemp("channels-e2e")
    loop = LoopThread()
    slack = loop.run(FakeSlack(f"xoxb-{uuid.uuid4().hex}", f"xapp-{uuid.uuid4().hex}").start())
    ms = loop.run(FakeMicrosoft(str(uuid.uuid4()), secrets.token_hex(16), str(uuid.uuid4())).start())
    secret = secrets.token_hex(16)
    rasa_port, actions_port = free_port(), free_port()
    env = channel_env(slack, ms, secret, RASA_PORT=str(rasa_port), ACTIONS_PORT=str(actions_port),
                      LOG_DIR=str(tmp), READY_TIMEOUT="180")
    proc = subprocess.Popen(["scripts/serve.sh"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        for line in proc.stdout:
            sys.stderr.write(line)
            if line.startswith("ready:"):
                break
            if time.monotonic() > deadline:
                break
        else:
            pytest.fail(f"servers did not start:\n{_logs(tmp)}")
        base = f"http://127.0.0.1:{rasa_port}"
        wait_channels_up(base, slack, proc, tmp)
        yield {"base": base, "slack": slack, "ms": ms, "secret": secret, "loop": loop, "logs": tmp}
    finally:
        _stop(proc)
        loop.run(slack.stop())
        loop.run(ms.stop())
        loop.stop()


# ---------------------------------------------------------------------- Slack helpers
def slack_send(stack, payload: dict, form: bool = False, headers: dict | None = None) -> tuple:
    body = form_body(payload) if form else json.dumps(payload).encode()
    ctype = "application/x-www-form-urlencoded" if form else "application/json"
    return http("POST", f"{stack['base']}/webhooks/slack/webhook", body,
                {"Content-Type": ctype, **sign(stack["secret"], body), **(headers or {})})


def slack_posts(stack, channel: str, n: int = 1, timeout: float = REPLY_WITHIN) -> list:
    found = stack["slack"].posts.wait_count(lambda p: p["body"].get("channel") == channel, n, timeout)
    assert len(found) >= n, f"{len(found)} of {n} replies in {channel}:\n{_logs(stack['logs'])[-2000:]}"
    return [p["body"] for p in found]


def slack_ids(post: dict) -> list:
    return [b["text"]["text"].strip("*").split()[0] for b in post.get("blocks", [])
            if b["type"] == "section" and b.get("accessory")]


def slack_shown(post: dict) -> str:
    return "\n".join(render_slack.unescape(b["text"]["text"]) for b in post.get("blocks", [])
                     if b["type"] == "section" and b["text"]["type"] == "plain_text")


def channel_id(prefix: str = "C") -> str:
    return f"{prefix}{uuid.uuid4().hex[:9].upper()}"


# ---------------------------------------------------------------------- Slack
def test_a_signed_slack_event_is_answered_with_the_exact_recommendation(stack, corpus_by_id):
    channel = channel_id()
    event = mention("should I monitor with PET-CT?", "U1000001", channel)
    t0 = time.monotonic()
    status, body, _ = slack_send(stack, event_envelope(event))
    assert (status, body["handled"]) == (200, "accepted") and time.monotonic() - t0 < 3
    [post] = slack_posts(stack, channel)
    assert post["thread_ts"] == event["ts"]
    assert slack_ids(post)[0] == "1.1.8"
    assert corpus_by_id["1.1.8"]["text"] in slack_shown(post)
    assert corpus_by_id["1.1.8"]["text"] in render_slack.unescape(post["text"])


def test_slack_retry_is_answered_once(stack):
    channel = channel_id("D")
    envelope = event_envelope(direct("should I monitor with PET-CT?", "U1000002", channel))
    assert slack_send(stack, envelope)[1]["handled"] == "accepted"
    assert slack_send(stack, envelope, headers={"X-Slack-Retry-Num": "1"})[1]["handled"] == "duplicate"
    slack_posts(stack, channel)
    time.sleep(1.0)
    assert len(stack["slack"].posts.matching(lambda p: p["body"].get("channel") == channel)) == 1


def test_slack_clarification_button_round_trip(stack):
    channel = channel_id()
    question = mention("which endocrine therapy for ER positive advanced breast cancer?", "U1000003", channel)
    slack_send(stack, event_envelope(question))
    [first] = slack_posts(stack, channel, 1)
    buttons = {e["text"]["text"]: e for b in first["blocks"] if b["type"] == "actions" for e in b["elements"]}
    assert {"Postmenopausal woman", "Premenopausal or perimenopausal woman", "Man"} <= set(buttons)
    assert {"1.3.4", "1.3.5", "1.3.7"} <= set(slack_ids(first))
    choice = buttons["Premenopausal or perimenopausal woman"]
    click = block_action(choice["value"], choice["text"]["text"], "U1000003", channel, f"{time.time():.6f}",
                         thread_ts=question["ts"], action_id=choice["action_id"])
    assert slack_send(stack, click, form=True)[1]["handled"] == "accepted"
    second = slack_posts(stack, channel, 2)[1]
    assert second["thread_ts"] == question["ts"]
    assert "Has she previously been treated with tamoxifen?" in slack_shown(second)
    buttons = {e["text"]["text"]: e for b in second["blocks"] if b["type"] == "actions" for e in b["elements"]}
    choice = buttons["Previously treated with tamoxifen"]
    slack_send(stack, block_action(choice["value"], choice["text"]["text"], "U1000003", channel,
                                   f"{time.time():.6f}", thread_ts=question["ts"], action_id=choice["action_id"]),
               form=True)
    assert slack_ids(slack_posts(stack, channel, 3)[2])[0] == "1.3.6"


def test_slack_thread_keeps_context_and_another_thread_does_not(stack):
    channel = channel_id()
    first = mention("first line endocrine therapy for a postmenopausal woman with ER+ MBC", "U1000004", channel)
    slack_send(stack, event_envelope(first))
    assert slack_ids(slack_posts(stack, channel, 1)[0])[0] == "1.3.4"
    slack_send(stack, event_envelope(mention("and for men?", "U1000005", channel, thread_ts=first["ts"])))
    followed = slack_posts(stack, channel, 2)[1]
    assert followed["thread_ts"] == first["ts"] and slack_ids(followed)[0] == "1.3.7"
    other = mention("and for men?", "U1000004", channel)
    slack_send(stack, event_envelope(other))
    elsewhere = slack_posts(stack, channel, 3)[2]
    assert elsewhere["thread_ts"] == other["ts"]
    assert "1.3.7" not in slack_ids(elsewhere)


def test_slack_socket_mode_message_is_answered(stack, corpus_by_id):
    slack, channel = stack["slack"], channel_id("D")
    envelope = socket_envelope(event_envelope(direct("should I monitor with PET-CT?", "U1000006", channel)))
    stack["loop"].run(slack.push(envelope))
    assert slack.acks.wait(lambda a: a["envelope_id"] == envelope["envelope_id"], 10)
    [post] = slack_posts(stack, channel)
    assert slack_ids(post)[0] == "1.1.8" and corpus_by_id["1.1.8"]["text"] in slack_shown(post)


def test_slack_abstention_and_bad_input(stack):
    channel = channel_id("D")
    slack_send(stack, event_envelope(direct("what dose of letrozole should I give?", "U1000007", channel)))
    [post] = slack_posts(stack, channel)
    assert post["blocks"][0]["type"] == "header" and post["blocks"][0]["text"]["text"] == "No recommendation in CG81"
    assert slack_send(stack, {"type": "event_callback", "event": {"type": "message", "subtype": "message_changed",
                                                                  "channel": channel}})[1]["handled"] == "ignored"
    bad = b"{not json"
    status = http("POST", f"{stack['base']}/webhooks/slack/webhook", bad,
                  {"Content-Type": "application/json", **sign(stack["secret"], bad)})[0]
    assert status == 400


# ---------------------------------------------------------------------- Teams
def teams_send(stack, act: dict) -> tuple:
    ms = stack["ms"]
    return http("POST", f"{stack['base']}/webhooks/teams/webhook", json.dumps(act).encode(),
                {"Content-Type": "application/json", "Authorization": f"Bearer {ms.channel_token()}"})


def teams_activity(stack, text: str, **kw) -> dict:
    ms = stack["ms"]
    return activity(text, service_url=ms.service_url, app_id=ms.app_id, tenant=ms.tenant, **kw)


def teams_replies(stack, conversation: str, n: int = 1, timeout: float = REPLY_WITHIN) -> list:
    found = stack["ms"].replies.wait_count(
        lambda r: r["conversation"] == conversation and r["body"]["type"] == "message", n, timeout)
    assert len(found) >= n, f"{len(found)} of {n} replies in {conversation}:\n{_logs(stack['logs'])[-2000:]}"
    return found


def card_ids(reply: dict) -> list:
    content = reply["body"]["attachments"][0]["content"]
    return [n["items"][0]["inlines"][0]["text"].split()[0] for n in content["body"]
            if n.get("type") == "Container" and len(n.get("items", [])) > 2]


def card_text(reply: dict) -> str:
    out, stack_ = [], [reply["body"]]
    while stack_:
        node = stack_.pop(0)
        if isinstance(node, dict):
            if node.get("type") == "TextRun":
                out.append(node["text"])
            stack_.extend(node.values())
        elif isinstance(node, list):
            stack_.extend(node)
    return "\n".join(out)


def test_a_signed_teams_activity_is_answered_with_an_adaptive_card(stack, corpus_by_id):
    act = teams_activity(stack, "should I monitor with PET-CT?")
    t0 = time.monotonic()
    status, body, _ = teams_send(stack, act)
    assert (status, body["handled"]) == (200, "accepted") and time.monotonic() - t0 < 3
    [reply] = teams_replies(stack, act["conversation"]["id"])
    assert reply["reply_to"] == act["id"]
    assert card_ids(reply)[0] == "1.1.8" and corpus_by_id["1.1.8"]["text"] in card_text(reply)
    typing = stack["ms"].replies.matching(lambda r: r["conversation"] == act["conversation"]["id"]
                                          and r["body"]["type"] == "typing")
    assert typing and typing[0]["t"] <= reply["t"]


def test_teams_channel_thread_keeps_context_and_card_click_round_trip(stack):
    thread = f"19:{uuid.uuid4().hex}@thread.tacv2;messageid=1700000001000"
    first = teams_activity(stack, "first line endocrine therapy for a postmenopausal woman with ER+ MBC",
                           scope="channel", conversation=thread, mention_bot=True)
    teams_send(stack, first)
    assert card_ids(teams_replies(stack, thread, 1)[0])[0] == "1.3.4"
    teams_send(stack, teams_activity(stack, "and for men?", scope="channel", conversation=thread,
                                     user="29:colleague", mention_bot=True))
    assert card_ids(teams_replies(stack, thread, 2)[1])[0] == "1.3.7"

    conv = f"a:1{uuid.uuid4().hex}"
    teams_send(stack, teams_activity(stack, "which endocrine therapy for ER positive advanced breast cancer?",
                                     conversation=conv))
    [clarify] = teams_replies(stack, conv, 1)
    content = clarify["body"]["attachments"][0]["content"]
    submits = {a["title"]: a for s in content["body"] if s.get("type") == "ActionSet" for a in s["actions"]
               if a["type"] == "Action.Submit"}
    teams_send(stack, teams_activity(stack, "", conversation=conv, value=submits["Man"]["data"]))
    assert card_ids(teams_replies(stack, conv, 2)[1])[0] == "1.3.7"


def test_teams_refuses_a_token_for_another_service_url(stack):
    act = teams_activity(stack, "should I monitor with PET-CT?")
    token = stack["ms"].channel_token(service_url="https://smba.trafficmanager.net/uk/")
    status, _, _ = http("POST", f"{stack['base']}/webhooks/teams/webhook", json.dumps(act).encode(),
                        {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    assert status == 401


# ---------------------------------------------------------------------- action server down or stalled
class ActionServerStandIn:
    """Where Rasa's action endpoint points: it either accepts connections and never answers (stalled) or
    drops them at once (down). A raw TCP server: nothing of the assistant runs behind it."""

    def __init__(self) -> None:
        self.mode = "stall"
        self.server = None
        self.port = None
        self.held: list = []

    async def start(self):
        import asyncio

        async def handle(reader, writer):
            if self.mode == "down":
                writer.close()
                return
            self.held.append(writer)
            await asyncio.sleep(120)

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self):
        for w in self.held:
            w.close()
        self.server.close()


def test_a_stalled_or_dead_action_server_gives_a_clear_message_within_10_s(tmp_path):
    if not MODEL.exists():
        pytest.fail("no trained model: run `make train` first")
    loop = LoopThread()
    slack = loop.run(FakeSlack(f"xoxb-{uuid.uuid4().hex}", f"xapp-{uuid.uuid4().hex}").start())
    ms = loop.run(FakeMicrosoft(str(uuid.uuid4()), secrets.token_hex(16), str(uuid.uuid4())).start())
    actions = loop.run(ActionServerStandIn().start())
    secret = secrets.token_hex(16)
    rasa_port = free_port()
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text(f'action_endpoint:\n  url: "http://127.0.0.1:{actions.port}/webhook"\n')
    with open(tmp_path / "rasa.log", "w") as log:
        proc = subprocess.Popen([str(ROOT / ".venv-rasa/bin/rasa"), "run", "--model", str(MODEL), "--endpoints",
                                 str(endpoints), "--credentials", "credentials.yml", "--port", str(rasa_port),
                                 "--interface", "127.0.0.1"], cwd=ROOT, env=channel_env(slack, ms, secret),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stack = {"base": f"http://127.0.0.1:{rasa_port}", "slack": slack, "ms": ms, "secret": secret, "loop": loop,
             "logs": tmp_path}
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", rasa_port)) == 0:
                    break
            if proc.poll() is not None:
                pytest.fail(_logs(tmp_path))
            time.sleep(0.5)
        wait_channels_up(stack["base"], slack, proc, tmp_path, timeout=120)
        for mode in ("stall", "down"):
            actions.mode = mode
            channel = channel_id("D")
            t0 = time.perf_counter()      # the fakes stamp arrivals with perf_counter too
            slack_send(stack, event_envelope(direct("bone mets imaging?", "U1000008", channel)))
            [post] = slack.posts.wait(lambda p, c=channel: p["body"].get("channel") == c, 15)
            assert render_slack.unescape(post["body"]["text"]) == answer.SERVICE_UNAVAILABLE, mode
            assert post["t"] - t0 < 10, mode
            act = teams_activity(stack, "bone mets imaging?")
            t0 = time.perf_counter()
            teams_send(stack, act)
            [reply] = teams_replies(stack, act["conversation"]["id"], timeout=15)
            assert reply["body"]["text"] == answer.SERVICE_UNAVAILABLE and reply["t"] - t0 < 10, mode
        # A static response needs no action server: the channel still answers it.
        channel = channel_id("D")
        slack_send(stack, event_envelope(direct("hello", "U1000009", channel)))
        assert "CG81" in slack_shown(slack_posts(stack, channel)[0])
    finally:
        _stop(proc)
        loop.run(actions.stop())
        loop.run(slack.stop())
        loop.run(ms.stop())
        loop.stop()
