"""Web chat channel under .venv-rasa: session tokens, input checks, security headers, history and feedback.

The channel's blueprint runs in a real Sanic app through its ASGI interface (no network), with Rasa's own
in-memory tracker store. Where Rasa's agent would handle a message, `rasa_like` records the turn the way
the agent does (UserUttered + BotUttered events, bot messages through OutputChannel.send_response), so
history is read back exactly as in production. The real Rasa server is exercised by tests/test_web_browser.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.rasa
pytest.importorskip("rasa")

from rasa.core.channels.channel import CollectingOutputChannel, UserMessage  # noqa: E402
from rasa.core.tracker_store import InMemoryTrackerStore  # noqa: E402
from rasa.shared.core.constants import ACTION_SESSION_START_NAME  # noqa: E402
from rasa.shared.core.domain import Domain  # noqa: E402
from rasa.shared.core.events import ActionExecuted, BotUttered, SessionStarted, UserUttered  # noqa: E402
from sanic import Sanic  # noqa: E402

from assistant import answer, config, corpus, links  # noqa: E402
from assistant.rasa.channel import MAX_BODY_BYTES  # noqa: E402
from assistant.rasa.webchat import ROLLOVER_KEY, SECURITY_HEADERS, Signer, WebChatInput, history_turns  # noqa: E402

KEY = b"k" * 32
RECORDS = {r["id"]: r for r in corpus.load()}


def item(rec_id: str) -> dict:
    return answer.answer_item(RECORDS[rec_id], 0.9)


def scripted_reply(text: str) -> list:
    """What the assistant would say (action-server style messages), chosen by the test's message."""
    if text == "boom":
        raise RuntimeError("the turn failed")
    if text == "answered, then failed":
        return [{"text": "an answer the tracker store never saved"}, RuntimeError("the save failed")]
    if text == "silence":
        return []
    if text.startswith("which"):
        clar = {"question": "Is this a postmenopausal woman or a man?", "options": ["Postmenopausal woman", "Man"]}
        return [{"text": "Is this a postmenopausal woman or a man?",
                 "buttons": [{"title": o, "payload": o} for o in clar["options"]],
                 "custom": answer.payload([item("1.3.4"), item("1.3.7")], clarification=clar)}]
    if "dose" in text:
        return [{"text": answer.abstention_text("out_of_scope:oos_dosing"),
                 "custom": answer.abstention_payload("out_of_scope:oos_dosing")}]
    answers = [item("1.3.4"), item("RR2")]
    return [{"text": answer.answer_text(answers), "custom": answer.payload(answers)}]


class App:
    """The channel in a Sanic app, called through ASGI on one event loop for the whole module."""

    def __init__(self, signer: Signer) -> None:
        self.loop = asyncio.new_event_loop()
        self.app = Sanic(f"webchat-test-{uuid.uuid4().hex[:8]}")
        self.store = InMemoryTrackerStore(Domain.empty())
        self.app.ctx.agent = SimpleNamespace(tracker_store=self.store)
        self.channel = WebChatInput(signer)
        self.app.blueprint(self.channel.blueprint(self.rasa_like), url_prefix="/webhooks/web")
        self.loop.run_until_complete(self._lifespan())

    async def rasa_like(self, message: UserMessage) -> None:
        """Stands in for Rasa's agent.handle_message: the turn goes into the tracker store as Rasa records it."""
        # Every session (Rasa's in-memory store would keep only the latest one on save).
        tracker = (await self.store.retrieve_full_tracker(message.sender_id)
                   or await self.store.get_or_create_tracker(message.sender_id))
        if not any(isinstance(e, SessionStarted) for e in tracker.events) or message.text == "after a long break":
            # Rasa starts a session on the first message, and again after the idle timeout.
            tracker.update(ActionExecuted(ACTION_SESSION_START_NAME))
            tracker.update(SessionStarted())
        elif message.text == "after many turns":
            tracker.update(SessionStarted(metadata={ROLLOVER_KEY: 10}))  # context carried over: no break
        tracker.update(UserUttered(message.text, message_id=message.message_id))
        for bot in scripted_reply(message.text):
            if isinstance(bot, Exception):
                raise bot
            event = BotUttered(bot.get("text"), data={k: bot.get(k) for k in ("buttons", "custom")})
            tracker.update(event)
            await message.output_channel.send_response(message.sender_id, event.message())
        await self.store.save(tracker)

    async def _lifespan(self) -> None:
        inbox: asyncio.Queue = asyncio.Queue()
        outbox: asyncio.Queue = asyncio.Queue()
        await inbox.put({"type": "lifespan.startup"})
        self._lifespan_task = asyncio.ensure_future(self.app({"type": "lifespan", "asgi": {"version": "3.0"}},
                                                             inbox.get, outbox.put))
        assert (await outbox.get())["type"] == "lifespan.startup.complete"

    def call(self, method: str, path: str, body: bytes | dict | None = None, token: str | None = None) -> tuple:
        """(status, headers, parsed JSON or raw bytes)."""
        raw = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
        headers = [(b"host", b"test"), (b"content-type", b"application/json")]
        if token:
            headers.append((b"x-cg81-session", token.encode()))
        path_only, _, query = path.partition("?")
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path_only, "raw_path": path_only.encode(), "query_string": query.encode(),
                 "root_path": "", "headers": headers, "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80)}
        out = {"status": None, "headers": {}, "body": b""}
        received = False

        async def receive():
            nonlocal received
            if received:
                await asyncio.sleep(3600)
            received = True
            return {"type": "http.request", "body": raw, "more_body": False}

        async def send(msg):
            if msg["type"] == "http.response.start":
                out["status"] = msg["status"]
                out["headers"] = {k.decode().lower(): v.decode() for k, v in msg["headers"]}
            elif msg["type"] == "http.response.body":
                out["body"] += msg.get("body", b"")

        self.loop.run_until_complete(self.app(scope, receive, send))
        data = out["body"]
        if out["headers"].get("content-type", "").startswith("application/json"):
            data = json.loads(data)
        return out["status"], out["headers"], data

    def session(self) -> tuple:
        status, _, data = self.call("POST", "/webhooks/web/session")
        assert status == 200
        return data["conversation_id"], data["token"]


@pytest.fixture(scope="module")
def web():
    logging.getLogger("sanic").setLevel(logging.WARNING)
    return App(Signer(KEY))


def assert_secure(headers: dict) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name.lower()) == value, name
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp


# ---------------------------------------------------------------------- tokens
def test_token_round_trip_and_tampering():
    signer = Signer(KEY)
    conversation_id, token = signer.issue()
    assert conversation_id.startswith("web-") and signer.verify(token) == conversation_id
    version, cid, issued, sig = token.split(".")
    other_cid = "web-" + "0" * 32
    forged = [f"{version}.{other_cid}.{issued}.{sig}", f"{version}.{cid}.{int(issued) + 1}.{sig}",
              f"{version}.{cid}.{issued}.{sig[:-2]}AA", f"v2.{cid}.{issued}.{sig}", token + ".x", "", "v1...",
              None, 42, {"token": token}, "x" * 500]
    for bad in forged:
        assert signer.verify(bad) is None, bad
    assert Signer(b"another key, 16+ bytes").verify(token) is None


def test_tokens_expire_and_cannot_come_from_the_future():
    signer = Signer(KEY, max_age_s=3600)
    _, token = signer.issue(now=1_000_000)
    assert signer.verify(token, now=1_000_000 + 3599) is not None
    assert signer.verify(token, now=1_000_000 + 3601) is None
    assert signer.verify(token, now=1_000_000 - 3600) is None


def test_key_from_the_environment_or_a_random_one_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv("CG81_WEB_SECRET", "a deployment secret of some length")
    _, token = Signer.from_env().issue()
    assert Signer.from_env().verify(token) is not None  # any worker or restart with the same key
    monkeypatch.delenv("CG81_WEB_SECRET")
    with caplog.at_level(logging.WARNING):
        first, second = Signer.from_env(), Signer.from_env()
    assert "CG81_WEB_SECRET is not set" in caplog.text
    _, token = first.issue()
    assert first.verify(token) is not None and second.verify(token) is None
    with pytest.raises(ValueError):
        Signer(b"short")


# ---------------------------------------------------------------------- page and headers
def test_page_and_assets_are_served_with_security_headers(web):
    status, headers, body = web.call("GET", "/webhooks/web/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert_secure(headers)
    assert b'<script src="static/app.js" defer></script>' in body
    assert b"<script>" not in body and b" on" + b"click=" not in body and b"style=" not in body  # nothing inline
    for name, ctype in (("app.js", "text/javascript"), ("app.css", "text/css"), ("favicon.svg", "image/svg+xml")):
        status, headers, _ = web.call("GET", f"/webhooks/web/static/{name}")
        assert status == 200 and headers["content-type"].startswith(ctype), name
        assert_secure(headers)
    status, headers, _ = web.call("GET", "/webhooks/web")
    assert status in (301, 302) and headers["location"] == "/webhooks/web/"


@pytest.mark.parametrize("name", ["nope.js", "index.html", "../channel.py", "..%2fchannel.py", "web/app.js"])
def test_only_the_page_files_are_served(web, name):
    status, headers, _ = web.call("GET", f"/webhooks/web/static/{name}")
    assert status == 404
    assert_secure(headers)


def test_no_http_url_or_external_asset_in_the_page():
    """Every asset is local: no CDN, no font or script from the internet."""
    from assistant.rasa.webchat import STATIC_DIR

    for path in STATIC_DIR.iterdir():
        text = path.read_text(encoding="utf-8").replace("http://www.w3.org/2000/svg", "")  # a name, not a fetch
        for url in ("http://", "//cdn", "@import", "fonts.googleapis"):
            assert url not in text, (path.name, url)
        if path.suffix == ".js":
            assert ".innerHTML" not in text and "insertAdjacentHTML" not in text and "eval(" not in text


# ---------------------------------------------------------------------- messages
@pytest.mark.parametrize("body,status,reason", [
    (b"{not json", 400, "not valid JSON"),
    (b"\xff\xfe\x00", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b'{"token": "x"}', 400, "'message' must be a string"),
    (b'{"message": 5}', 400, "'message' must be a string"),
    (b'{"message": "hi", "metadata": [1]}', 400, "'metadata'"),
    (b"{" + b" " * (MAX_BODY_BYTES + 10) + b"}", 413, "bytes"),
])
def test_malformed_messages_get_4xx_with_a_reason(web, body, status, reason):
    got, headers, data = web.call("POST", "/webhooks/web/message", body)
    assert got == status and reason in data["error"]
    assert_secure(headers)


def test_a_message_needs_a_valid_token(web):
    for token in (None, "v1.web-abc.1.sig", Signer(b"not the server's key!").issue()[1]):
        status, headers, data = web.call("POST", "/webhooks/web/message", {"message": "bone mets?", "token": token})
        assert status == 401 and "token" in data["error"]
        assert_secure(headers)


def test_a_turn_returns_the_bot_messages_and_the_nice_links(web):
    conversation_id, token = web.session()
    status, headers, data = web.call("POST", "/webhooks/web/message", {"message": "bone\x00 mets  imaging?"},
                                     token=token)
    assert status == 200 and headers["cache-control"] == "no-store"
    assert_secure(headers)
    turn = data["turn"]
    assert data["conversation_id"] == conversation_id and turn["user"] == "bone mets imaging?"  # cleaned
    assert len(turn["turn_id"]) == 32
    custom = [m["custom"] for m in turn["messages"] if "custom" in m]
    assert custom == [answer.payload([item("1.3.4"), item("RR2")])]
    assert all("recipient_id" not in m for m in turn["messages"])
    assert data["links"] == {"1.3.4": links.nice_url(item("1.3.4")), "RR2": links.nice_url(item("RR2"))}
    # The token in the body works as well as the X-CG81-Session header.
    status, _, data = web.call("POST", "/webhooks/web/message", {"message": "again", "token": token})
    assert status == 200 and data["conversation_id"] == conversation_id


def test_inputs_that_never_reach_the_dialogue_get_a_reply(web):
    _, token = web.session()
    for text, reply in (("", answer.EMPTY_MESSAGE), (" \x00\x01 ", answer.EMPTY_MESSAGE),
                        ("x" * (config.MAX_QUESTION_CHARS + 1), answer.too_long(config.MAX_QUESTION_CHARS))):
        status, _, data = web.call("POST", "/webhooks/web/message", {"message": text}, token=token)
        assert status == 200 and data["turn"]["turn_id"] is None
        assert data["turn"]["messages"] == [{"text": reply}]


def test_a_failed_or_silent_turn_says_no_recommendation_was_given(web, caplog):
    _, token = web.session()
    with caplog.at_level(logging.DEBUG):
        for text in ("boom", "silence", "answered, then failed"):
            status, _, data = web.call("POST", "/webhooks/web/message", {"message": text}, token=token)
            assert status == 200
            assert data["turn"]["messages"] == [{"text": answer.SERVICE_UNAVAILABLE}]
        web.call("POST", "/webhooks/web/message", {"message": "a private question about Mrs Smith"}, token=token)
    assert "message handling failed" in caplog.text
    assert "Mrs Smith" not in caplog.text and "boom" not in caplog.text.replace("the turn failed", "")


# ---------------------------------------------------------------------- history
def test_history_is_the_same_messages_as_the_live_turns(web):
    _, token = web.session()
    live = [web.call("POST", "/webhooks/web/message", {"message": q}, token=token)[2]
            for q in ("which endocrine therapy?", "Man", "what dose of letrozole?")]
    status, headers, data = web.call("GET", "/webhooks/web/history", token=token)
    assert status == 200 and data["complete"] is True
    assert_secure(headers)
    assert data["turns"] == [d["turn"] for d in live]
    assert data["links"] == {k: v for d in live for k, v in d["links"].items()}
    # Buttons and payload of the clarification come back as Rasa sent them.
    first = data["turns"][0]["messages"]
    assert first[0]["buttons"] == [{"title": "Postmenopausal woman", "payload": "Postmenopausal woman"},
                                   {"title": "Man", "payload": "Man"}]
    assert first[1]["custom"]["clarification"]["options"] == ["Postmenopausal woman", "Man"]


def test_a_new_session_is_marked_live_and_in_the_history(web):
    """After the idle timeout Rasa starts a new session without the patient context: the turn says so."""
    _, token = web.session()
    flags = [web.call("POST", "/webhooks/web/message", {"message": q}, token=token)[2]["turn"]["new_session"]
             for q in ("bone mets imaging?", "and for the spine?", "after a long break", "after many turns")]
    assert flags == [True, False, True, False]  # the first turn starts the first session
    history = web.call("GET", "/webhooks/web/history", token=token)[2]["turns"]
    assert [t["new_session"] for t in history] == flags


def test_the_rollover_marker_is_the_stores_own():
    stores = pytest.importorskip("assistant.rasa.stores")
    assert stores.ROLLOVER == ROLLOVER_KEY


def test_history_needs_the_token_and_shows_only_its_own_conversation(web):
    _, token = web.session()
    web.call("POST", "/webhooks/web/message", {"message": "bone mets imaging?"}, token=token)
    assert web.call("GET", "/webhooks/web/history")[0] == 401
    assert web.call("GET", "/webhooks/web/history", token=token + "x")[0] == 401
    _, other = web.call("POST", "/webhooks/web/session")[2].values()
    status, _, data = web.call("GET", "/webhooks/web/history", token=other)
    assert status == 200 and data["turns"] == []


def test_history_serialises_bot_events_as_the_output_channel_sends_them():
    """One BotUttered with text, buttons and a custom payload: the text message (with buttons), then the payload,
    exactly what Rasa's CollectingOutputChannel gives the REST and web channels live."""
    payload = answer.payload([item("1.3.4")])
    data = {"buttons": [{"title": "Man", "payload": "Man"}], "custom": payload, "elements": None,
            "quick_replies": None, "attachment": None, "image": None}
    events = [UserUttered("which?", message_id="a" * 32), BotUttered("Is this a man?", data=data)]
    turns = asyncio.run(history_turns(events))
    live = CollectingOutputChannel()
    asyncio.run(live.send_response("someone", BotUttered("Is this a man?", data=dict(data)).message()))
    assert turns == [{"turn_id": "a" * 32, "user": "which?", "new_session": False, "messages": [
        {"text": "Is this a man?", "buttons": [{"title": "Man", "payload": "Man"}]}, {"custom": payload}]}]
    assert turns[0]["messages"] == [{k: v for k, v in m.items() if k != "recipient_id"} for m in live.messages]


# ---------------------------------------------------------------------- feedback
def test_feedback_is_stored_with_the_turn(web, tmp_path, monkeypatch):
    target = tmp_path / "feedback.jsonl"
    monkeypatch.setenv("CG81_FEEDBACK_PATH", str(target))
    conversation_id, token = web.session()
    first = web.call("POST", "/webhooks/web/message", {"message": "which endocrine therapy?"}, token=token)[2]
    second = web.call("POST", "/webhooks/web/message", {"message": "Man"}, token=token)[2]
    body = {"turn_id": second["turn"]["turn_id"], "rec_ids": ["1.3.4"], "value": "up"}
    status, headers, data = web.call("POST", "/webhooks/web/feedback", body, token=token)
    assert (status, data) == (200, {"stored": True})
    assert_secure(headers)
    [record] = [json.loads(line) for line in target.read_text().splitlines()]
    assert record["conversation_id"] == conversation_id and record["turn_id"] == second["turn"]["turn_id"]
    assert record["turns"] == ["which endocrine therapy?", "Man"] and record["rec_ids"] == ["1.3.4"]
    assert record["answer_ids"] == ["1.3.4", "RR2"] and record["value"] == "up" and record["channel"] == "web"
    clar = {"turn_id": first["turn"]["turn_id"], "rec_ids": ["1.3.7"], "value": "down"}
    assert web.call("POST", "/webhooks/web/feedback", clar, token=token)[0] == 200


@pytest.mark.parametrize("body,status", [
    ({"turn_id": "0" * 32, "rec_ids": [], "value": "up"}, 404),
    ({"turn_id": "nope", "rec_ids": [], "value": "up"}, 400),
    ({"turn_id": None, "rec_ids": [], "value": "up"}, 400),
    ({"rec_ids": ["9.9.9"], "value": "up"}, 400),
    ({"rec_ids": "1.3.4", "value": "up"}, 400),
    ({"rec_ids": ["1.1.1"], "value": "up"}, 400),   # not among the turn's answers
    ({"rec_ids": ["1.3.4"], "value": "meh"}, 400),
])
def test_bad_feedback_is_refused(web, tmp_path, monkeypatch, body, status):
    monkeypatch.setenv("CG81_FEEDBACK_PATH", str(tmp_path / "feedback.jsonl"))
    _, token = web.session()
    turn = web.call("POST", "/webhooks/web/message", {"message": "bone mets imaging?"}, token=token)[2]["turn"]
    body = {"turn_id": turn["turn_id"], **body}
    got, headers, data = web.call("POST", "/webhooks/web/feedback", body, token=token)
    assert got == status and "error" in data
    assert_secure(headers)
    assert not (tmp_path / "feedback.jsonl").exists()
    # Another conversation's turn cannot be judged with this token, nor without one.
    _, other = web.session()
    good = {"turn_id": turn["turn_id"], "rec_ids": [], "value": "up"}
    assert web.call("POST", "/webhooks/web/feedback", good, token=other)[0] == 404
    assert web.call("POST", "/webhooks/web/feedback", good)[0] == 401
