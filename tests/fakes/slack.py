"""A fake Slack: the Web API methods the assistant calls, a Socket Mode WebSocket server, and request signing.

    fake = FakeSlack(bot_token, app_token); await fake.start()
    fake.api_url            → SLACK_API_URL for the channel under test
    fake.posts              → Recorder of chat.postMessage calls ({"t", "body", "auth"})
    await fake.push(env)    → send a Socket Mode envelope to the connected client; fake.acks records acks
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from urllib.parse import parse_qs, urlencode

from aiohttp import WSMsgType, web

from .loop import Recorder

BOT_USER = "UB0T0001"
BOT_ID = "BB0T0001"
TEAM = "T00000001"


def sign(secret: str, body: bytes, timestamp: int | None = None) -> dict:
    """Slack's v0 request signature, computed here independently of slack_sdk (which is under test)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + ts.encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def event_envelope(event: dict, event_id: str | None = None, team: str = TEAM) -> dict:
    return {"token": "unused-verification-token", "team_id": team, "api_app_id": "A00000001",
            "event": {"team": team, "event_ts": event.get("ts"), **event}, "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:12].upper()}", "event_time": int(time.time()),
            "authorizations": [{"team_id": team, "user_id": BOT_USER, "is_bot": True}]}


def mention(text: str, user: str, channel: str, ts: str | None = None, thread_ts: str | None = None,
            **extra) -> dict:
    """An app_mention event: "<@bot> text" in a channel."""
    event = {"type": "app_mention", "user": user, "text": f"<@{BOT_USER}> {text}", "channel": channel,
             "ts": ts or new_ts(), **extra}
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def direct(text: str, user: str, channel: str, ts: str | None = None, **extra) -> dict:
    """A message.im event: a direct message to the bot."""
    return {"type": "message", "channel_type": "im", "user": user, "text": text, "channel": channel,
            "ts": ts or new_ts(), **extra}


_last_ts = [0.0]


def new_ts() -> str:
    now = max(time.time(), _last_ts[0] + 0.000001)
    _last_ts[0] = now
    return f"{now:.6f}"


def block_action(value: str, title: str, user: str, channel: str, message_ts: str,
                 thread_ts: str | None = None, action_id: str = "cg81_reply_1", team: str = TEAM) -> dict:
    message = {"type": "message", "ts": message_ts, "user": BOT_USER, "bot_id": BOT_ID, "text": "…"}
    container = {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": False}
    if thread_ts:
        message["thread_ts"] = thread_ts
        container["thread_ts"] = thread_ts
    return {"type": "block_actions", "team": {"id": team, "domain": "nhs-test"},
            "user": {"id": user, "username": "clinician", "team_id": team},
            "api_app_id": "A00000001", "token": "unused", "container": container,
            "trigger_id": f"{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex[:8]}",
            "channel": {"id": channel, "name": "directmessage" if channel.startswith("D") else "oncology"},
            "message": message, "response_url": "https://hooks.invalid/actions/x",
            "actions": [{"type": "button", "action_id": action_id, "block_id": "b1",
                         "text": {"type": "plain_text", "text": title, "emoji": False}, "value": value,
                         "action_ts": f"{time.time():.6f}"}]}


def form_body(payload: dict) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


class FakeSlack:
    def __init__(self, bot_token: str, app_token: str) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.posts = Recorder()
        self.acks = Recorder()
        self.calls = Recorder()
        self.sockets: list = []
        self.connections = 0
        self.refuse_blocks = False
        self.runner = None
        self.port = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base}/api/"

    async def start(self) -> FakeSlack:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/socket", self._socket)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        for ws in list(self.sockets):
            await ws.close()
        if self.runner is not None:
            await self.runner.cleanup()

    async def _api(self, request: web.Request) -> web.Response:
        t = time.perf_counter()
        method = request.match_info["method"]
        raw = await request.read()
        if (request.content_type or "").startswith("application/json"):
            body = json.loads(raw or b"{}")
        else:
            body = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        auth = request.headers.get("Authorization", "")
        self.calls.add({"t": t, "method": method, "body": body, "auth": auth})
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if auth != f"Bearer {expected}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if method == "auth.test":
            return web.json_response({"ok": True, "url": "https://nhs-test.slack.com/", "team": "NHS test",
                                      "user": "cg81", "team_id": TEAM, "user_id": BOT_USER, "bot_id": BOT_ID})
        if method == "apps.connections.open":
            return web.json_response({"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket?ticket={uuid.uuid4()}"})
        if method == "chat.postMessage":
            if self.refuse_blocks and body.get("blocks"):
                self.posts.add({"t": t, "body": body, "refused": True})
                return web.json_response({"ok": False, "error": "invalid_blocks"})
            self.posts.add({"t": t, "body": body})
            return web.json_response({"ok": True, "channel": body.get("channel"), "ts": new_ts(),
                                      "message": {"text": body.get("text"), "bot_id": BOT_ID}})
        return web.json_response({"ok": False, "error": "unknown_method"})

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.connections += 1
        self.sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1,
                            "debug_info": {"host": "fake-slack", "approximate_connection_time": 18060},
                            "connection_info": {"app_id": "A00000001"}})
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    try:
                        data = json.loads(msg.data)
                    except ValueError:
                        continue
                    if isinstance(data, dict) and data.get("envelope_id"):
                        self.acks.add({"t": time.perf_counter(), **data})
        finally:
            if ws in self.sockets:
                self.sockets.remove(ws)
        return ws

    def connected(self) -> bool:
        return bool(self.sockets)

    async def push(self, envelope: dict) -> None:
        """Deliver a Socket Mode envelope on the newest connection."""
        await self.sockets[-1].send_str(json.dumps(envelope))


def socket_envelope(payload: dict, kind: str = "events_api", retry_attempt: int = 0) -> dict:
    env = {"envelope_id": str(uuid.uuid4()), "type": kind, "payload": payload,
           "accepts_response_payload": False}
    if kind == "events_api":
        env.update({"retry_attempt": retry_attempt, "retry_reason": "" if not retry_attempt else "timeout"})
    return env
