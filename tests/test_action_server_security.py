"""The real action server (rasa-sdk, our plugin attached): authenticated, loopback-only by default,
never echoing the tracker in an error. Started here on a free port; mocks nothing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from assistant import config

pytestmark = pytest.mark.e2e
TOKEN = "test-" + os.urandom(8).hex()
SECRET_TEXT = "pt 943 476 5919 asks about letrozole"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _port()
    env = dict(os.environ, CG81_ACTION_TOKEN=TOKEN, SANIC_HOST="127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-m", "rasa_sdk", "--actions", "actions", "--port", str(port)],
                            cwd=config.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(base + "/health", timeout=2).read()
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("action server did not start:\n" + proc.stdout.read())
    yield base, port
    proc.terminate()
    try:
        output, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    assert "943 476 5919" not in output            # no request content in the server's log either


def call(url: str, body: dict | None = None, token: str | None = None) -> tuple:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def test_health_is_open(server):
    assert call(server[0] + "/health")[0] == 200


@pytest.mark.parametrize("token,status", [(None, 401), ("wrong", 403), ("", 401)])
def test_calls_without_the_shared_secret_are_refused(server, token, status):
    code, body, _ = call(server[0] + "/webhook", {"next_action": "action_answer_recommendation"}, token)
    assert code == status and "error" in json.loads(body)
    assert call(server[0] + "/actions", token=token)[0] == status


def test_an_error_does_not_echo_the_request(server):
    body = {"next_action": "action_answer_recommendation", "tracker": SECRET_TEXT, "domain": {}}
    code, text, headers = call(server[0] + "/webhook", body, TOKEN)
    assert code == 500 and json.loads(text) == {"error": "internal error in the action server"}
    assert "943" not in text and headers["X-Content-Type-Options"] == "nosniff"


def test_the_right_secret_runs_the_action(server):
    tracker = {"sender_id": "t", "slots": {}, "latest_message": {"text": "should I monitor with PET-CT?",
               "intent": {"name": "ask_guideline"}, "entities": []}, "events": [], "paused": False,
               "followup_action": None, "active_loop": {}, "latest_action_name": "action_listen"}
    code, text, _ = call(server[0] + "/webhook", {"next_action": "action_answer_recommendation", "tracker": tracker,
                                                 "domain": {}, "version": "3.6.21"}, TOKEN)
    assert code == 200
    assert json.loads(text)["responses"][0]["custom"]["answers"][0]["id"] == "1.1.8"


def _non_loopback_address() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))            # TEST-NET: no packet is sent for a UDP connect
            addr = s.getsockname()[0]
    except OSError:
        return None
    return None if addr.startswith("127.") else addr


def test_not_reachable_from_a_non_loopback_address(server):
    addr = _non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    with pytest.raises(OSError):
        socket.create_connection((addr, server[1]), timeout=3).close()
