"""Web chat channel: the clinicians' chat page and its JSON endpoints, served by the Rasa server itself.

Registered in credentials.yml; Rasa mounts it at /webhooks/web/:

    GET  /webhooks/web/              the page (index.html); its assets under /webhooks/web/static/
    POST /webhooks/web/session       a new conversation: {"conversation_id", "token"}
    POST /webhooks/web/message       {"token", "message"} -> the bot messages of one turn
    GET  /webhooks/web/history       (X-CG81-Session: <token>) -> every turn, read from the tracker store
    POST /webhooks/web/feedback      {"token", "turn_id", "rec_ids", "value": "up"|"down"}

The token is an HMAC of the conversation ID (key: CG81_WEB_SECRET), so a browser can only read and continue
its own conversation; the conversation ID is the Rasa sender ID. It travels in its own header (or the POST
body), not in Authorization, which stays free for whatever sign-on a proxy in front puts there.

Messages reuse the REST channel's input checks and never end in silence or a 5xx. Every response carries
the security headers (a CSP with no inline script, no framing). Nothing here logs message text.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict

from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, UserMessage
from rasa.shared.core.events import BotUttered, SessionStarted, UserUttered
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from assistant import answer, feedback, links
from assistant.dialogue import clean
from assistant.rasa import governance
from assistant.rasa.channel import MAX_BODY_BYTES, parse_body, reply_without_nlu
from assistant.rasa.channel_common import turn_timeout

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent / "web"
SECRET_ENV = "CG81_WEB_SECRET"
TOKEN_DAYS = float(os.environ.get("CG81_WEB_TOKEN_DAYS", "30"))
_CONVERSATION = re.compile(r"^web-[0-9a-f]{32}$")
_TURN_ID = re.compile(r"^[0-9a-f]{32}$")
_REC_ID = re.compile(r"^(1\.[1-5]\.\d{1,2}|RR[1-6])$")
_TOKEN_PREFIX = b"cg81-web-session:v1:"
# SessionStarted metadata of a session started only to bound per-turn cost, context carried over
# (assistant/rasa/stores.py ROLLOVER): not a break the clinician needs to know about.
ROLLOVER_KEY = "cg81_rollover"

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".json": "application/json"}


# ---------------------------------------------------------------------- session tokens
class Signer:
    """Issues and checks session tokens: v1.<conversation id>.<issued, unix s>.<HMAC-SHA256, base64url>."""

    def __init__(self, key: bytes, max_age_s: float = TOKEN_DAYS * 86400) -> None:
        if len(key) < 16:
            raise ValueError("the web chat secret must be at least 16 bytes")
        self._key = key
        self.max_age_s = max_age_s

    @classmethod
    def from_env(cls) -> Signer:
        """The deployment's key from CG81_WEB_SECRET; without one (local development) a random key for this
        process, so tokens stop working when the server restarts (as its in-memory conversations do)."""
        secret = os.environ.get(SECRET_ENV, "")
        if secret:
            return cls(secret.encode("utf-8"))
        log.warning("%s is not set: web chat sessions are signed with a random per-process key and end when "
                    "the server restarts (set it in production, and whenever more than one worker runs)",
                    SECRET_ENV)
        return cls(secrets.token_bytes(32))

    def _sign(self, conversation_id: str, issued: int) -> str:
        mac = hmac.new(self._key, _TOKEN_PREFIX + f"{conversation_id}.{issued}".encode("ascii"), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")

    def issue(self, conversation_id: str | None = None, now: float | None = None) -> tuple:
        """(conversation_id, token) for a new conversation (or for a given ID, as tests need)."""
        conversation_id = conversation_id or f"web-{uuid.uuid4().hex}"
        issued = int(time.time() if now is None else now)
        return conversation_id, f"v1.{conversation_id}.{issued}.{self._sign(conversation_id, issued)}"

    def verify(self, token: Any, now: float | None = None) -> str | None:
        """The conversation ID the token was issued for, or None (malformed, forged, expired, from the future)."""
        if not isinstance(token, str) or len(token) > 200:
            return None
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != "v1" or not _CONVERSATION.match(parts[1]) or not parts[2].isdigit():
            return None
        conversation_id, issued = parts[1], int(parts[2])
        if not hmac.compare_digest(parts[3], self._sign(conversation_id, issued)):
            return None
        age = (time.time() if now is None else now) - issued
        if age < -300 or age > self.max_age_s:
            return None
        return conversation_id


# ---------------------------------------------------------------------- serialisation
def client_messages(messages: list) -> list:
    """Collector messages as the page gets them (the recipient is the page's own conversation)."""
    return [{k: v for k, v in m.items() if k != "recipient_id"} for m in messages]


def answer_links(messages: list) -> dict:
    """NICE link per recommendation ID in the turn's guideline payloads (assistant/links.py, shared)."""
    out = {}
    for m in messages:
        custom = m.get("custom")
        if isinstance(custom, dict) and custom.get("type") == "guideline_answer":
            for item in custom.get("answers") or []:
                out[item["id"]] = links.nice_url(item)
    return out


async def history_turns(events: list) -> list:
    """Turns of a conversation from its tracker events: each user message with the bot messages after it.

    Bot messages go through the same OutputChannel.send_response that Rasa used for the live reply, so a
    reloaded page gets exactly the messages (and so the cards) it got at the time. `new_session` marks a turn
    that began a new Rasa session (after the idle timeout), where the patient context was cleared: the page
    shows the clinician that break rather than a conversation that looks continuous.
    """
    turns: list = []
    current = None
    session_started = False
    for event in events:
        if isinstance(event, SessionStarted):
            session_started = session_started or ROLLOVER_KEY not in (event.metadata or {})
        elif isinstance(event, UserUttered):
            current = {"turn_id": event.message_id, "user": event.text, "messages": [],
                       "new_session": session_started}
            session_started = False
            turns.append(current)
        elif isinstance(event, BotUttered):
            if current is None:
                current = {"turn_id": None, "user": None, "messages": [], "new_session": False}
                turns.append(current)
            collector = CollectingOutputChannel()
            await collector.send_response("history", event.message())
            current["messages"].extend(client_messages(collector.messages))
    return turns


def turn_payload(turn: dict) -> dict | None:
    return next((m["custom"] for m in turn["messages"] if isinstance(m.get("custom"), dict)
                 and m["custom"].get("type") == "guideline_answer"), None)


# ---------------------------------------------------------------------- the channel
def _json(body: Any, status: int = 200) -> HTTPResponse:
    return response.json(body, status=status, headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})


def _error(message: str, status: int) -> HTTPResponse:
    return _json({"error": message}, status)


def _static_files() -> dict:
    """The page's files, read once: only these names are served (no path from the request reaches the disk)."""
    files = {}
    for p in sorted(STATIC_DIR.rglob("*")):
        if p.is_file() and p.suffix in CONTENT_TYPES:
            files[p.relative_to(STATIC_DIR).as_posix()] = (p.read_bytes(), CONTENT_TYPES[p.suffix])
    return files


SESSION_HEADER = "X-CG81-Session"


def _session_token(request: Request, body: dict | None = None) -> Any:
    return request.headers.get(SESSION_HEADER) or (body or {}).get("token")


def _json_object(raw: bytes) -> dict:
    """A JSON object from a small request body, or ValueError with the client-facing reason."""
    if len(raw) > MAX_BODY_BYTES:
        raise ValueError(f"request body over {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValueError("request body must be a JSON object")
    return data


def _status_for(exc: ValueError) -> int:
    return 413 if "bytes" in str(exc) else 400


class WebChatInput(InputChannel):
    """The page, its assets and its JSON API, on the Rasa port."""

    def __init__(self, signer: Signer | None = None) -> None:
        self.signer = signer or Signer.from_env()

    @classmethod
    def name(cls) -> str:
        return "web"

    @classmethod
    def from_credentials(cls, credentials: Dict[str, Any] | None) -> WebChatInput:
        return cls()

    async def _tracker_events(self, request: Request, conversation_id: str, latest_session: bool = False
                              ) -> list | None:
        """The conversation's events (all sessions, or the latest) from the agent's tracker store; None when
        there is no agent yet."""
        agent = getattr(request.app.ctx, "agent", None)
        if agent is None or agent.tracker_store is None:
            return None
        store = agent.tracker_store
        tracker = await (store.retrieve(conversation_id) if latest_session
                         else store.retrieve_full_tracker(conversation_id))
        return list(tracker.events) if tracker is not None else []

    async def _began_session(self, request: Request, conversation_id: str, turn_id: str) -> bool:
        """Whether this turn started a new session (the patient context was cleared): the page marks it."""
        try:
            turns = await history_turns(await self._tracker_events(request, conversation_id, True) or [])
        except Exception:  # noqa: BLE001 - only a marker: the answer stands without it
            log.warning("web chat: could not read conversation %s after a turn", conversation_id)
            return False
        return any(t["turn_id"] == turn_id and t["new_session"] for t in turns)

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        hook = Blueprint("cg81_web_chat", __name__)
        files = _static_files()

        @hook.route("/", methods=["GET"])
        async def page(request: Request) -> HTTPResponse:
            if not request.path.endswith("/"):  # relative asset and API URLs need the trailing slash
                return response.redirect(request.path + "/", headers=SECURITY_HEADERS)
            body, ctype = files["index.html"]
            return response.raw(body, content_type=ctype, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})

        @hook.route("/static/<name:path>", methods=["GET"])
        async def static(request: Request, name: str) -> HTTPResponse:
            found = files.get(name) if name != "index.html" else None
            if found is None:
                return _error("not found", 404)
            return response.raw(found[0], content_type=found[1],
                                headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})

        @hook.route("/session", methods=["POST"])
        async def session(request: Request) -> HTTPResponse:
            conversation_id, token = self.signer.issue()
            return _json({"conversation_id": conversation_id, "token": token})

        @hook.route("/message", methods=["POST"])
        async def message(request: Request) -> HTTPResponse:
            raw = request.body or b""
            try:
                _, text, _ = parse_body(raw)
                body = json.loads(raw.decode("utf-8"))
            except ValueError as exc:
                return _error(str(exc), _status_for(exc))
            conversation_id = self.signer.verify(_session_token(request, body))
            if conversation_id is None:
                return _error("invalid or missing session token", 401)
            # Patient identifiers never reach Rasa (trackers, logs) nor the audit trail.
            redaction = governance.redact(text)
            text = redaction.text
            early = reply_without_nlu(text)
            if early is not None:  # never reaches the dialogue, so not a turn of the conversation
                await governance.audit_turn(channel=self.name(), user=conversation_id, conversation=conversation_id,
                                            redaction=redaction, messages=[], seconds=0.0, status="early")
                return _json({"conversation_id": conversation_id, "links": {},
                              "turn": {"turn_id": None, "user": None, "messages": [{"text": early}],
                                       "new_session": False}})
            turn_id = uuid.uuid4().hex
            cleaned = clean(text)
            collector = CollectingOutputChannel()
            t0 = time.perf_counter()
            failed = False
            try:
                # Bounded like every channel's turn: a stalled action server or database gives the clinician
                # "no recommendation has been given" within seconds (channel_common.turn_timeout).
                await asyncio.wait_for(on_new_message(UserMessage(cleaned, collector, conversation_id,
                                                                  input_channel=self.name(), message_id=turn_id)),
                                       turn_timeout())
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the clinician must get a reply
                # As in the REST channel: e.g. the tracker store failed to save the turn, and an answer the
                # conversation would not remember (nor show after a reload) is not given.
                failed = True
                log.exception("web chat: message handling failed for conversation %s", conversation_id)
            messages = client_messages(collector.messages)
            if failed or not messages:
                messages = [{"text": answer.SERVICE_UNAVAILABLE}]
            messages = governance.with_reminder(messages, redaction)
            await governance.audit_turn(channel=self.name(), user=conversation_id, conversation=conversation_id,
                                        redaction=redaction, messages=messages,
                                        seconds=time.perf_counter() - t0, status="error" if failed else "ok",
                                        turn_id=turn_id)
            new_session = not failed and await self._began_session(request, conversation_id, turn_id)
            log.debug("web chat turn %s: %d messages in %.0f ms", turn_id[:8], len(messages),
                      (time.perf_counter() - t0) * 1000)
            return _json({"conversation_id": conversation_id, "links": answer_links(messages),
                          "turn": {"turn_id": turn_id, "user": cleaned, "messages": messages,
                                   "new_session": new_session}})

        @hook.route("/history", methods=["GET"])
        async def history(request: Request) -> HTTPResponse:
            conversation_id = self.signer.verify(_session_token(request))
            if conversation_id is None:
                return _error("invalid or missing session token", 401)
            try:
                events = await self._tracker_events(request, conversation_id)
                turns = await history_turns(events or [])
            except Exception:  # noqa: BLE001 - an empty page with a notice beats an error page
                log.exception("web chat: history unavailable for conversation %s", conversation_id)
                events, turns = None, []
            messages = [m for t in turns for m in t["messages"]]
            return _json({"conversation_id": conversation_id, "turns": turns, "links": answer_links(messages),
                          "complete": events is not None})

        @hook.route("/feedback", methods=["POST"])
        async def give_feedback(request: Request) -> HTTPResponse:
            try:
                body = _json_object(request.body or b"")
            except ValueError as exc:
                return _error(str(exc), _status_for(exc))
            conversation_id = self.signer.verify(_session_token(request, body))
            if conversation_id is None:
                return _error("invalid or missing session token", 401)
            turn_id, value, rec_ids = body.get("turn_id"), body.get("value"), body.get("rec_ids", [])
            if not isinstance(turn_id, str) or not _TURN_ID.match(turn_id):
                return _error("'turn_id' must be the turn_id of an answer", 400)
            if value not in feedback.VALUES:
                return _error("'value' must be 'up' or 'down'", 400)
            if not isinstance(rec_ids, list) or len(rec_ids) > 20 or not all(
                    isinstance(i, str) and _REC_ID.match(i) for i in rec_ids):
                return _error("'rec_ids' must be a list of recommendation IDs", 400)
            try:
                turns = await history_turns(await self._tracker_events(request, conversation_id) or [])
            except Exception:  # noqa: BLE001
                log.exception("web chat: feedback could not read conversation %s", conversation_id)
                return _json({"stored": False, "error": "the conversation cannot be read right now"})
            index = next((i for i, t in enumerate(turns) if t["turn_id"] == turn_id), None)
            if index is None:
                return _error("no such turn in this conversation", 404)
            payload = turn_payload(turns[index])
            if payload is None or not set(rec_ids) <= {a["id"] for a in payload.get("answers") or []}:
                return _error("'rec_ids' must be among the turn's answers", 400)
            user_turns = [t["user"] for t in turns[: index + 1] if t["user"]]
            entry = feedback.record(conversation_id, turn_id, value, rec_ids, user_turns, payload)
            await governance.audit_feedback(turn_id, value, rec_ids)
            try:
                feedback.append(entry)
            except OSError:
                log.exception("web chat: feedback could not be written")
                return _json({"stored": False, "error": "feedback could not be stored"})
            return _json({"stored": True})

        return hook
