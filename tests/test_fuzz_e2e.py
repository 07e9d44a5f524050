"""Property-based fuzzing (Hypothesis) of what reaches the real servers from outside: the REST body, the
web chat's message body, a Slack event (signed, so that it gets past the signature check) and a Teams
activity (unsigned: refused). Random JSON, unicode, huge and nested values: always a 2xx or a 4xx, never
a 5xx, and the server keeps answering."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.servers import Stack

pytestmark = pytest.mark.e2e
SLACK_SECRET = "fuzz-signing-secret"
EXAMPLES = 40
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=200),
                    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=20), children,
                                                                                     max_size=6),
                    max_leaves=30)
MESSAGE = st.one_of(st.text(max_size=300), st.text(max_size=3000), st.binary(max_size=200).map(
    lambda b: b.decode("latin-1")), st.sampled_from(["", " ", "\x00", "<script>alert(1)</script>", "1.3.4",
                                                    "ignore previous instructions", "\u202e\u200b", "9" * 5000]))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("fuzz"), env={
        "SLACK_BOT_TOKEN": "xoxb-fuzz", "SLACK_SIGNING_SECRET": SLACK_SECRET,
        "SLACK_API_URL": "http://127.0.0.1:9/api/",            # replies go nowhere: the webhook must not care
        "MICROSOFT_APP_ID": "00000000-0000-0000-0000-000000000000", "MICROSOFT_APP_PASSWORD": "x",
        "MICROSOFT_APP_TENANT_ID": "11111111-1111-1111-1111-111111111111",
        "BOTFRAMEWORK_OPENID_METADATA_URL": "http://127.0.0.1:9/openid", "MICROSOFT_LOGIN_URL": "http://127.0.0.1:9"})
    s.start()
    yield s
    s.stop()


def post(url: str, body: bytes, headers: dict | None = None) -> int:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def assert_not_5xx(status: int) -> None:
    assert 200 <= status < 500, status


@FUZZ
@given(body=JSON, message=MESSAGE)
def test_rest_body(stack, body, message):
    url = f"{stack.base}/webhooks/rest/webhook"
    assert_not_5xx(post(url, json.dumps(body).encode()))
    assert_not_5xx(post(url, json.dumps({"sender": "fuzz", "message": message}).encode()))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=2000))
def test_rest_raw_bytes(stack, raw):
    assert_not_5xx(post(f"{stack.base}/webhooks/rest/webhook", raw))


@FUZZ
@given(body=JSON, message=MESSAGE)
def test_web_chat_message(stack, body, message):
    session = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"{stack.web}session", data=b"{}", headers={"Content-Type": "application/json"}), timeout=30).read())
    headers = {"X-CG81-Session": session["token"]}
    assert_not_5xx(post(f"{stack.web}message", json.dumps(body).encode(), headers))
    assert_not_5xx(post(f"{stack.web}message", json.dumps({"message": message}).encode(), headers))


def _slack_headers(body: bytes) -> dict:
    ts = str(int(time.time()))
    sig = "v0=" + hmac.new(SLACK_SECRET.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig}


@FUZZ
@given(event=JSON, text=MESSAGE)
def test_slack_signed_events(stack, event, text):
    url = f"{stack.base}/webhooks/slack/webhook"
    for body in (json.dumps(event).encode(), json.dumps({"type": "event_callback", "event_id": "Ev" + str(
            hash(text) & 0xFFFFFF), "team_id": "T1", "event": {"type": "app_mention", "user": "U1", "channel": "C1",
                                                                "ts": "1.0", "text": text}}).encode()):
        assert_not_5xx(post(url, body, _slack_headers(body)))


@FUZZ
@given(activity=JSON)
def test_teams_unsigned_activities_are_refused(stack, activity):
    status = post(f"{stack.base}/webhooks/teams/webhook", json.dumps(activity).encode(),
                  {"Authorization": "Bearer not.a.jwt"})
    assert status in (400, 401, 403, 413, 503), status


def test_still_answering_after_the_fuzz(stack):
    body = json.dumps({"sender": "after", "message": "should I monitor with PET-CT?"}).encode()
    req = urllib.request.Request(f"{stack.base}/webhooks/rest/webhook", headers={"Content-Type": "application/json"},
                                 data=body)
    messages = json.loads(urllib.request.urlopen(req, timeout=60).read())
    assert any((m.get("custom") or {}).get("answers", [{}])[0].get("id") == "1.1.8" for m in messages)
