"""Clinical governance end to end, against the real Rasa server and action server (scripts/serve.sh) with
an API token, a tracker database and an audit key of their own: authentication, the audit trail (every
turn exactly once, with the right answer IDs; export and summary agree with it), and patient identifiers
(kept in no log file, tracker row or audit record)."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from assistant import config
from assistant.privacy import PLACEHOLDERS, REMINDER
from tests.servers import Stack

pytestmark = pytest.mark.e2e
TOKEN = "api-" + uuid.uuid4().hex
SLACK_SECRET = "slack-" + uuid.uuid4().hex
AUDIT_KEY = "audit-" + uuid.uuid4().hex
# Synthetic identifiers: valid NHS check digits, a date of birth, a postcode, a phone number, an e-mail.
IDENTIFIERS = ["943 476 5919", "4010232137", "12/03/1961", "SW1A 1AA", "07700 900123", "jo.bloggs@example.org"]
NOT_IDENTIFIERS = ["943 476 5918", "1.3.4"]          # an invalid check digit; a recommendation ID
SCRIPT = [  # (sender, message, expected first answer ID or None for no guideline answer)
    ("gov-a", "should I monitor with PET-CT?", "1.1.8"),
    ("gov-a", f"pt NHS {IDENTIFIERS[0]}, DOB {IDENTIFIERS[2]}, lives {IDENTIFIERS[3]}: bisphos for bony mets?",
     "1.5.14"),
    ("gov-b", f"{IDENTIFIERS[1]} ER+ MBC, no prior hormone therapy, 71F - which endocrine therapy?", "1.3.4"),
    ("gov-b", f"call daughter on {IDENTIFIERS[4]} or {IDENTIFIERS[5]} - what dose of letrozole?", None),
    ("gov-c", f"ref {NOT_IDENTIFIERS[0]}: show {NOT_IDENTIFIERS[1]}", "1.3.4"),
    ("gov-c", "hello", None),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    work = tmp_path_factory.mktemp("governance")
    s = Stack(work, env={"CG81_API_TOKEN": TOKEN, "CG81_AUDIT_KEY": AUDIT_KEY,
                         # Slack on, its replies sent nowhere: the turn (and its audit record) is what counts here
                         "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": SLACK_SECRET,
                         "SLACK_API_URL": "http://127.0.0.1:9/api/"})
    s.start()
    yield s
    s.stop()


def post(stack, body: bytes, token: str | None = TOKEN) -> tuple:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"{stack.base}/webhooks/rest/webhook", data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null"), dict(exc.headers)


def say(stack, sender: str, message: str) -> list:
    status, messages, _ = post(stack, json.dumps({"sender": sender, "message": message}).encode())
    assert status == 200, messages
    return messages


@pytest.mark.parametrize("token", [None, "wrong", ""])
def test_rest_requires_the_bearer_token(stack, token):
    status, body, headers = post(stack, b'{"sender": "x", "message": "should I monitor with PET-CT?"}', token)
    assert status == 401 and "error" in body
    assert headers.get("X-Content-Type-Options") == "nosniff"


@pytest.fixture(scope="module")
def scripted(stack):
    replies = [say(stack, sender, message) for sender, message, _ in SCRIPT]
    return replies


def _payload(messages: list) -> dict | None:
    return next((m["custom"] for m in messages if isinstance(m.get("custom"), dict)), None)


def test_the_action_server_is_warmed_with_its_token_before_ready(stack):
    """serve.sh's warm-up is an action call and must carry the action token: refused (401), the first
    clinician's turn pays for loading the core and can overrun the action timeout."""
    assert "ready:" in stack.output() and "warm-up call failed" not in stack.output()


def test_answers_are_unchanged_and_the_clinician_is_reminded(scripted):
    for (_, message, expected), messages in zip(SCRIPT, scripted):
        payload = _payload(messages)
        if expected:
            assert payload["answers"][0]["id"] == expected, (message, payload)
        texts = " ".join(m.get("text") or "" for m in messages)
        assert (REMINDER in texts) == any(i in message for i in IDENTIFIERS), message


def _audit_rows(stack) -> list:
    out = subprocess.run([sys.executable, "-m", "assistant", "audit", "export", "--format", "json", "--url",
                          stack.env["TRACKER_STORE_URL"]], cwd=config.ROOT, capture_output=True, text=True,
                         env=dict(os.environ, CG81_AUDIT_KEY=AUDIT_KEY), timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_every_turn_is_audited_once_with_its_answer(stack, scripted):
    rows = _audit_rows(stack)          # this stack's database holds these turns only (refused calls are not turns)
    assert len(rows) == len(SCRIPT)
    for (sender, _message, expected), row in zip(SCRIPT, rows):
        assert row["channel"] == "rest"
        assert row["user_id"] != sender and len(row["user_id"]) == 32 and row["conversation_id"] != sender
        if expected:
            assert row["answer_ids"].split(",")[0] == expected and not row["abstained"]
            assert row["corpus_sha256"] and row["model"].startswith("cg81-minilm-ft")
    assert (rows[3]["abstained"], rows[3]["reason"]) == (True, "out_of_scope:oos_dosing")
    assert rows[5]["kind"] == "other" and rows[5]["answer_ids"] == ""   # a greeting is audited too
    assert rows[1]["identifiers_removed"] == "nhs_number,date,postcode"
    assert rows[0]["conversation_id"] == rows[1]["conversation_id"] != rows[2]["conversation_id"]
    # export (CSV) and summary agree with the records
    csv_out = subprocess.run([sys.executable, "-m", "assistant", "audit", "export", "--url",
                              stack.env["TRACKER_STORE_URL"]], cwd=config.ROOT, capture_output=True, text=True,
                             timeout=120)
    assert len(list(csv.DictReader(io.StringIO(csv_out.stdout)))) == len(_audit_rows(stack))
    summary = json.loads(subprocess.run([sys.executable, "-m", "assistant", "audit", "summary", "--url",
                                         stack.env["TRACKER_STORE_URL"]], cwd=config.ROOT, capture_output=True,
                                        text=True, timeout=120).stdout)["overall"]
    assert summary["turns"] == len(_audit_rows(stack))
    assert summary["abstention_reasons"].get("out_of_scope:oos_dosing", 0) >= 1


def test_web_chat_and_slack_turns_are_audited_once_too(stack, scripted):
    """Every channel, not only REST: two web chat turns (one with feedback) and a Slack event delivered twice
    (a platform retry) give three audit records and one feedback record."""
    before = len(_audit_rows(stack))
    session = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"{stack.web}session", data=b"{}", headers={"Content-Type": "application/json"}), timeout=30).read())
    web = {"Content-Type": "application/json", "X-CG81-Session": session["token"]}
    turns = []
    for question in ("should I monitor with PET-CT?", "tamoxifen for men with ER+ ABC?"):
        req = urllib.request.Request(f"{stack.web}message", data=json.dumps({"message": question}).encode(),
                                     headers=web)
        turns.append(json.loads(urllib.request.urlopen(req, timeout=60).read())["turn"])
    feedback = {"turn_id": turns[0]["turn_id"], "value": "up", "rec_ids": ["1.1.8"]}
    urllib.request.urlopen(urllib.request.Request(f"{stack.web}feedback", data=json.dumps(feedback).encode(),
                                                  headers=web), timeout=30).read()
    event = json.dumps({"type": "event_callback", "team_id": "T1", "event_id": "EvGOV1", "event": {
        "type": "app_mention", "user": "U1", "channel": "C1", "ts": "1700000000.000100",
        "text": "<@UBOT> bisphos for bony mets?"}}).encode()
    for retry in (None, "1"):
        ts = str(int(time.time()))
        sig = "v0=" + hmac.new(SLACK_SECRET.encode(), f"v0:{ts}:".encode() + event, hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig,
                   **({"X-Slack-Retry-Num": retry} if retry else {})}
        urllib.request.urlopen(urllib.request.Request(f"{stack.base}/webhooks/slack/webhook", data=event,
                                                      headers=headers), timeout=30).read()
    deadline = time.monotonic() + 30
    while len(_audit_rows(stack)) < before + 3 and time.monotonic() < deadline:
        time.sleep(0.5)                       # the Slack turn runs after the acknowledgement
    time.sleep(2)                             # and a second (wrong) record would come within this
    new = _audit_rows(stack)[before:]
    assert sorted(r["channel"] for r in new) == ["slack", "web", "web"]
    by_turn = {r["turn_id"]: r for r in new}
    assert by_turn[turns[0]["turn_id"]]["answer_ids"].split(",")[0] == "1.1.8"
    assert by_turn[turns[0]["turn_id"]]["feedback"] == "up"
    assert next(r for r in new if r["channel"] == "slack")["answer_ids"].split(",")[0] == "1.5.14"


def test_identifiers_are_kept_nowhere(stack, scripted):
    db = stack.env["TRACKER_STORE_URL"][len("sqlite:///"):]
    with sqlite3.connect(db) as conn:
        stored = [row for table in ("events", "audit_turns") for row in conn.execute(f"SELECT * FROM {table}")]
    stored_text = json.dumps(stored)
    logs = "".join(p.read_text(errors="replace") for p in (stack.workdir / "logs").glob("*.log"))
    logs += stack.output()
    for identifier in IDENTIFIERS:
        assert identifier not in stored_text, identifier
        assert identifier not in logs, identifier
    assert PLACEHOLDERS["nhs_number"] in stored_text
    for kept in NOT_IDENTIFIERS:                                  # not identifiers: not redacted
        assert kept in stored_text


@pytest.mark.parametrize("path", ["/", "/webhooks/rest/", "/webhooks/web/", "/webhooks/health/"])
def test_security_headers_everywhere_and_no_cross_origin_access(stack, path):
    req = urllib.request.Request(f"{stack.base}{path}", headers={"Origin": "https://evil.example"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        headers = {k.lower(): v for k, v in resp.headers.items()}
    assert headers["x-content-type-options"] == "nosniff"
    assert headers.get("referrer-policy") == "no-referrer"
    assert "access-control-allow-origin" not in headers          # the web chat is same-origin: no CORS grant
