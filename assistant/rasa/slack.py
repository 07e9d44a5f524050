"""Slack input channel: the Events API and interactivity over HTTPS, and Socket Mode.

Registered in credentials.yml; enabled by the environment (secrets are never committed):

    SLACK_BOT_TOKEN        xoxb-… (both transports: posting answers)
    SLACK_SIGNING_SECRET   Events API over HTTPS (POST /webhooks/slack/webhook)
    SLACK_APP_TOKEN        xapp-… : Socket Mode (the assistant connects out; no public URL needed)
    SLACK_API_URL          default https://slack.com/api/ (tests point it at a local fake)

Without a bot token the channel is disabled: one log line says so and its webhook answers 503.

Every delivery is acknowledged at once (Slack wants a 2xx within 3 s) and answered from a background task
with chat.postMessage. Identity: one conversation per user in a direct message, one per thread in a
channel (an @mention at the top of a channel starts a thread; the answer goes in it). Retries (same
`event_id`, and the same message delivered as both `message.im` and `app_mention`) are answered once.
slack_sdk does the protocol: signature verification (v0 HMAC-SHA256, 5-minute window, constant-time
compare), the Web API client and Socket Mode; its loggers are held at INFO so message text never reaches
the logs.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict
from urllib.parse import parse_qs

from rasa.core.channels.channel import InputChannel, UserMessage
from sanic import Blueprint
from sanic.request import Request
from sanic.response import HTTPResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier

from assistant.rasa import render_slack
from assistant.rasa.channel_common import (
    MAX_BODY_BYTES,
    Deduplicator,
    Disposition,
    TaskSet,
    conversation_id,
    http_timeout,
    ignored,
    json_response,
    read_body,
    run_turn,
    turn_timeout,
)

log = logging.getLogger(__name__)
# slack_sdk logs request and message bodies at DEBUG: keep its loggers quieter than that, always.
SDK_LOGGER = logging.getLogger("assistant.rasa.slack.sdk")
SDK_LOGGER.setLevel(logging.INFO)
DEFAULT_API_URL = "https://slack.com/api/"
# Message subtypes that still carry a user's question; every other subtype (edits, deletions, joins,
# bot messages...) is ignored.
ANSWERED_SUBTYPES = {None, "", "file_share", "thread_broadcast"}


@dataclass
class SlackConfig:
    bot_token: str = ""
    signing_secret: str = ""
    app_token: str = ""
    api_url: str = DEFAULT_API_URL
    turn_timeout: float = 7.0
    http_timeout: float = 5.0

    @classmethod
    def from_env(cls, env: dict | None = None) -> SlackConfig:
        env = os.environ if env is None else env
        url = (env.get("SLACK_API_URL") or DEFAULT_API_URL).strip()
        return cls(bot_token=(env.get("SLACK_BOT_TOKEN") or "").strip(),
                   signing_secret=(env.get("SLACK_SIGNING_SECRET") or "").strip(),
                   app_token=(env.get("SLACK_APP_TOKEN") or "").strip(),
                   api_url=url if url.endswith("/") else url + "/",
                   turn_timeout=turn_timeout(), http_timeout=http_timeout())

    @property
    def events_enabled(self) -> bool:
        return bool(self.bot_token and self.signing_secret)

    @property
    def socket_mode_enabled(self) -> bool:
        return bool(self.bot_token and self.app_token)

    @property
    def enabled(self) -> bool:
        return self.events_enabled or self.socket_mode_enabled


@dataclass
class Target:
    """Where an answer goes: a channel, and the thread in it (None = the conversation itself)."""

    channel: str
    thread_ts: str | None


@dataclass
class Incoming:
    text: str
    sender_id: str
    target: Target
    kind: str               # dm | channel
    user: str = ""          # the Slack user (pseudonymised in the audit trail)


# ---------------------------------------------------------------------- text clean-up
_USER_MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>")
_SPECIAL_MENTION = re.compile(r"<!(?:[^>|]*)(?:\|[^>]*)?>")
_CHANNEL_MENTION = re.compile(r"<#[A-Z0-9]+(?:\|([^>]*))?>")
_LINK = re.compile(r"<((?:https?|mailto):[^>|]*)(?:\|([^>]*))?>")


def sanitize(text: str, bot_user_ids=()) -> str:
    """Slack's message markup back to what the clinician typed: the bot's mention removed (Rasa's rules
    for where the spaces go), other people's mentions dropped (they carry no clinical meaning and should not
    sit in a tracker), links and channel names as their labels, and &amp; &lt; &gt; unescaped."""
    for uid in bot_user_ids:
        if not uid:
            continue
        mention = rf"<@{re.escape(str(uid))}(?:\|[^>]*)?>"
        for pattern, replacement in ((mention + r"\s", ""), (r"\s" + mention, ""), (mention, " ")):
            text = re.sub(pattern, replacement, text)
    text = _USER_MENTION.sub("", text)
    text = _SPECIAL_MENTION.sub("", text)
    text = _CHANNEL_MENTION.sub(lambda m: f"#{m.group(1)}" if m.group(1) else "", text)
    text = _LINK.sub(lambda m: m.group(2) if m.group(2) else m.group(1).removeprefix("mailto:"), text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def _is_dm(channel: str, channel_type: str | None = None) -> bool:
    return channel_type == "im" or (channel_type is None and channel.startswith("D"))


# ---------------------------------------------------------------------- the platform logic
class SlackBridge:
    """Filter, identify, de-duplicate and answer: shared by the HTTPS webhook and Socket Mode."""

    def __init__(self, config: SlackConfig, on_new_message: Callable[[UserMessage], Awaitable[Any]],
                 input_channel: str = "slack") -> None:
        self.config = config
        self.on_new_message = on_new_message
        self.input_channel = input_channel
        self.dedup = Deduplicator()
        self.tasks = TaskSet()
        self.bot_user_ids: set = set()
        self.bot_id: str | None = None
        self._session = None
        self._client = None
        self._auth_checked = False

    # ------------------------------------------------------------------ lifecycle
    def attach(self, app) -> None:
        self.dedup.attach(app)

    def client(self):
        """The Web API client, on one shared aiohttp session (created in the running loop)."""
        if self._client is None:
            import aiohttp
            from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
            from slack_sdk.web.async_client import AsyncWebClient

            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.http_timeout))
            self._client = AsyncWebClient(token=self.config.bot_token, base_url=self.config.api_url,
                                          timeout=int(max(1, self.config.http_timeout)), session=self._session,
                                          logger=SDK_LOGGER)
            self._client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=1))
        return self._client

    async def learn_identity(self) -> None:
        """The bot's own user ID (to strip its mention and ignore its own messages), from auth.test."""
        if self._auth_checked:
            return
        self._auth_checked = True
        try:
            resp = await self.client().auth_test()
            if resp.get("user_id"):
                self.bot_user_ids.add(resp["user_id"])
            self.bot_id = resp.get("bot_id") or self.bot_id
        except Exception as exc:  # noqa: BLE001 - events also name the bot user; not fatal
            self._auth_checked = False
            log.warning("Slack auth.test failed (%s): the bot's user ID comes from events instead",
                        type(exc).__name__)

    async def close(self) -> None:
        await self.tasks.drain()
        await self.dedup.close()
        if self._session is not None:
            await self._session.close()
            self._session = None
            self._client = None

    # ------------------------------------------------------------------ deliveries
    async def handle_event(self, envelope: Any, retry_num: str | None = None) -> Disposition:
        """One Events API envelope (from the webhook or Socket Mode)."""
        if not isinstance(envelope, dict):
            return ignored("not an object")
        if envelope.get("type") != "event_callback":
            return ignored(f"envelope type {str(envelope.get('type'))[:40]}")
        event = envelope.get("event")
        if not isinstance(event, dict):
            return ignored("no event")
        for auth in envelope.get("authorizations") or []:
            if isinstance(auth, dict) and auth.get("is_bot") and isinstance(auth.get("user_id"), str):
                self.bot_user_ids.add(auth["user_id"])
        team = str(envelope.get("team_id") or event.get("team") or "")
        incoming = self.parse_event(event, team)
        if isinstance(incoming, Disposition):
            return incoming
        keys = [f"slack:msg:{team}:{event['channel']}:{event['ts']}"]
        if isinstance(envelope.get("event_id"), str):
            keys.insert(0, f"slack:event:{envelope['event_id']}")
        if not await self.dedup.claim(*keys):
            log.info("Slack delivery %s (retry %s) already handled: not answered again",
                     envelope.get("event_id"), retry_num or 0)
            return Disposition("duplicate")
        self.tasks.spawn(self.answer(incoming, keys=keys))
        return Disposition("accepted", incoming.kind)

    def parse_event(self, event: dict, team: str):
        """An Incoming to answer, or the Disposition saying why not."""
        etype = event.get("type")
        if etype not in ("app_mention", "message"):
            return ignored(f"event type {str(etype)[:40]}")
        if event.get("bot_id") or event.get("bot_profile") or event.get("subtype") == "bot_message":
            return ignored("bot message")
        user = event.get("user")
        if not isinstance(user, str) or not user:
            return ignored("no user")
        if user in self.bot_user_ids:
            return ignored("own message")
        if event.get("subtype") not in ANSWERED_SUBTYPES:
            return ignored(f"subtype {str(event.get('subtype'))[:40]}")
        if event.get("hidden"):
            return ignored("hidden")
        channel, ts = event.get("channel"), event.get("ts")
        if not isinstance(channel, str) or not channel or not isinstance(ts, str) or not ts:
            return ignored("missing channel or ts")
        dm = _is_dm(channel, event.get("channel_type"))
        if etype == "message" and not dm:
            return ignored("channel message without a mention")
        raw = event.get("text") if isinstance(event.get("text"), str) else ""
        text = sanitize(raw, self.bot_user_ids)
        if not text and event.get("files"):
            return ignored("files only")
        thread = event.get("thread_ts") if isinstance(event.get("thread_ts"), str) else None
        if dm:
            return Incoming(text, conversation_id("slack", team, "dm", user), Target(channel, thread), "dm",
                            f"slack:{team}:{user}")
        root = thread or ts
        return Incoming(text, conversation_id("slack", team, channel, root), Target(channel, root), "channel",
                        f"slack:{team}:{user}")

    async def handle_interaction(self, payload: Any) -> Disposition:
        """A button click (block_actions): its value is the next message of the same conversation."""
        if not isinstance(payload, dict):
            return ignored("not an object")
        if payload.get("type") != "block_actions":
            return ignored(f"interaction type {str(payload.get('type'))[:40]}")
        actions = payload.get("actions")
        action = actions[0] if isinstance(actions, list) and actions and isinstance(actions[0], dict) else None
        if action is None or action.get("type") != "button":
            return ignored("not a button")
        action_id = str(action.get("action_id") or "")
        if not action_id.startswith(render_slack.REPLY_ACTION_PREFIX):
            return ignored("link button")
        value = action.get("value")
        if not isinstance(value, str) or not value.strip():
            return ignored("no value")
        user = payload.get("user") if isinstance(payload.get("user"), dict) else {}
        channel = payload.get("channel") if isinstance(payload.get("channel"), dict) else {}
        container = payload.get("container") if isinstance(payload.get("container"), dict) else {}
        message = payload.get("message") if isinstance(payload.get("message"), dict) else {}
        user_id = user.get("id")
        channel_id = channel.get("id") or container.get("channel_id")
        if not isinstance(user_id, str) or not user_id or not isinstance(channel_id, str) or not channel_id:
            return ignored("missing user or channel")
        team_obj = payload.get("team") if isinstance(payload.get("team"), dict) else {}
        team = str(team_obj.get("id") or user.get("team_id") or "")
        message_ts = message.get("ts") or container.get("message_ts")
        thread = message.get("thread_ts") or container.get("thread_ts")
        dm = channel_id.startswith("D") or channel.get("name") == "directmessage"
        if dm:
            incoming = Incoming(value, conversation_id("slack", team, "dm", user_id), Target(channel_id, thread),
                                "dm", f"slack:{team}:{user_id}")
        else:
            root = thread or message_ts
            if not isinstance(root, str) or not root:
                return ignored("no thread")
            incoming = Incoming(value, conversation_id("slack", team, channel_id, root), Target(channel_id, root),
                                "channel", user=f"slack:{team}:{user_id}")
        key = f"slack:click:{team}:{channel_id}:{message_ts}:{user_id}:{action_id}"
        if not await self.dedup.claim(key):
            return Disposition("duplicate")
        title = action.get("text", {}).get("text") if isinstance(action.get("text"), dict) else None
        selected = render_slack.unescape(title) if isinstance(title, str) else value
        self.tasks.spawn(self.answer(incoming, selected=selected, keys=[key]))
        return Disposition("accepted", "click")

    # ------------------------------------------------------------------ answering
    async def answer(self, incoming: Incoming, selected: str | None = None, keys=()) -> None:
        try:
            turn = await run_turn(self.on_new_message, incoming.text, incoming.sender_id, self.input_channel,
                                  metadata={"platform": "slack", "conversation": incoming.kind},
                                  timeout=self.config.turn_timeout, user_id=incoming.user or None)
            for post in render_slack.render_turn(turn.messages, selected=selected):
                await self.post(incoming.target, post)
        finally:
            await self.dedup.confirm(*keys)
        log.info("Slack turn for %s: %s in %.0f ms", incoming.sender_id, turn.status, turn.seconds * 1000)

    async def post(self, target: Target, post: dict) -> bool:
        """chat.postMessage; blocks Slack's own models reject, or Slack refuses, fall back to plain text."""
        blocks = post.get("blocks")
        if blocks and not valid_blocks(blocks):
            log.error("rendered blocks failed Block Kit validation: posting the text fallback")
            post = render_slack.fallback_only(post)
        args = {"channel": target.channel, "text": post.get("text") or " ", "mrkdwn": False,
                "unfurl_links": False, "unfurl_media": False}
        if target.thread_ts:
            args["thread_ts"] = target.thread_ts
        if post.get("blocks"):
            args["blocks"] = post["blocks"]
        try:
            await self.client().chat_postMessage(**args)
            return True
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else "unknown"
            log.error("chat.postMessage failed: %s", error)
            if args.get("blocks") and error in ("invalid_blocks", "invalid_blocks_format", "msg_too_long"):
                args.pop("blocks")
                try:
                    await self.client().chat_postMessage(**args)
                    return True
                except Exception as again:  # noqa: BLE001
                    log.error("chat.postMessage of the text fallback failed: %s", type(again).__name__)
        except Exception as exc:  # noqa: BLE001 - timeouts, connection errors
            log.error("chat.postMessage failed: %s", type(exc).__name__)
        return False


def valid_blocks(blocks: list) -> bool:
    """slack_sdk's Block Kit models parse every block and check Slack's length limits."""
    from slack_sdk.errors import SlackObjectFormationError
    from slack_sdk.models.blocks import Block

    if len(blocks) > render_slack.MAX_BLOCKS:
        return False
    try:
        for block in blocks:
            parsed = Block.parse(block)
            if parsed is None:
                return False
            parsed.validate_json()
    except (SlackObjectFormationError, KeyError, TypeError, ValueError):
        return False
    return True


# ---------------------------------------------------------------------- Socket Mode
class SocketModeRunner:
    """Connects out to Slack (apps.connections.open, then a WebSocket), acknowledges each envelope at once
    and hands it to the bridge. slack_sdk's client reconnects by itself."""

    def __init__(self, bridge: SlackBridge) -> None:
        self.bridge = bridge
        self.client = None
        self._connect_task = None

    async def start(self) -> None:
        from slack_sdk.socket_mode.aiohttp import SocketModeClient
        from slack_sdk.web.async_client import AsyncWebClient

        cfg = self.bridge.config
        web = AsyncWebClient(base_url=cfg.api_url, timeout=int(max(1, cfg.http_timeout)), logger=SDK_LOGGER)
        self.client = SocketModeClient(app_token=cfg.app_token, web_client=web, logger=SDK_LOGGER)
        self.client.socket_mode_request_listeners.append(self.on_request)
        self._connect_task = self.bridge.tasks.spawn(self.client.connect(), name="cg81-slack-socket-mode")

    async def on_request(self, client, request) -> None:
        from slack_sdk.socket_mode.response import SocketModeResponse

        try:
            await client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))
        except Exception as exc:  # noqa: BLE001 - Slack re-delivers unacknowledged envelopes; dedup holds
            log.warning("Socket Mode acknowledgement failed: %s", type(exc).__name__)
        if request.type == "events_api":
            outcome = await self.bridge.handle_event(request.payload, retry_num=request.retry_attempt)
        elif request.type == "interactive":
            outcome = await self.bridge.handle_interaction(request.payload)
        else:
            outcome = ignored(f"socket mode type {str(request.type)[:40]}")
        log.debug("Socket Mode envelope: %s %s", outcome.status, outcome.reason)

    async def stop(self) -> None:
        if self.client is not None:
            try:
                await self.client.close()
            except Exception as exc:  # noqa: BLE001
                log.warning("closing Socket Mode failed: %s", type(exc).__name__)
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()


# ---------------------------------------------------------------------- the Rasa input channel
class SlackInput(InputChannel):
    """Rasa input channel "slack": POST /webhooks/slack/webhook, plus Socket Mode when configured."""

    def __init__(self, config: SlackConfig | None = None) -> None:
        self.config = config or SlackConfig.from_env()
        self.bridge: SlackBridge | None = None
        self.socket_mode: SocketModeRunner | None = None

    @classmethod
    def name(cls) -> str:
        return "slack"

    @classmethod
    def from_credentials(cls, credentials: Dict[str, Any] | None) -> SlackInput:
        """Secrets come from the environment only; a missing one disables the channel, never the server."""
        config = SlackConfig.from_env()
        if not config.enabled:
            log.info("Slack channel disabled: set SLACK_BOT_TOKEN with SLACK_SIGNING_SECRET (Events API) "
                     "and/or SLACK_APP_TOKEN (Socket Mode); /webhooks/slack/webhook answers 503")
        else:
            log.info("Slack channel enabled: Events API %s, Socket Mode %s",
                     "on" if config.events_enabled else "off (no SLACK_SIGNING_SECRET)",
                     "on" if config.socket_mode_enabled else "off (no SLACK_APP_TOKEN)")
        return cls(config)

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        hook = Blueprint("cg81_slack_webhook", __name__)
        config = self.config
        bridge = self.bridge = SlackBridge(config, on_new_message, self.name())
        verifier = SignatureVerifier(config.signing_secret) if config.signing_secret else None

        @hook.listener("after_server_start")
        async def start(app, loop) -> None:
            if not config.enabled:
                return
            bridge.attach(app)
            bridge.tasks.spawn(bridge.learn_identity(), name="cg81-slack-auth-test")
            if config.socket_mode_enabled:
                self.socket_mode = SocketModeRunner(bridge)
                await self.socket_mode.start()

        @hook.listener("before_server_stop")
        async def stop(app, loop) -> None:
            if self.socket_mode is not None:
                await self.socket_mode.stop()
            await bridge.close()

        @hook.route("/", methods=["GET"])
        async def health(request: Request) -> HTTPResponse:
            return json_response({"status": "ok" if config.enabled else "disabled",
                                  "events_api": config.events_enabled, "socket_mode": config.socket_mode_enabled})

        @hook.route("/webhook", methods=["POST"], stream=True)
        async def webhook(request: Request) -> HTTPResponse:
            if verifier is None or not config.bot_token:
                return json_response({"error": "the Slack Events API is not configured on this server "
                                               "(SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET)"}, 503)
            body = await read_body(request, MAX_BODY_BYTES)
            if body is None:
                return json_response({"error": f"request body over {MAX_BODY_BYTES} bytes"}, 413)
            if not _signature_ok(verifier, body, request.headers):
                return json_response({"error": "invalid or stale Slack signature"}, 401)
            bridge.attach(request.app)
            ctype = (request.headers.get("content-type") or "").lower()
            try:
                if ctype.startswith("application/x-www-form-urlencoded"):
                    form = parse_qs(body.decode("utf-8"), strict_parsing=False)
                    payload = json.loads(form.get("payload", [""])[0])
                    return json_response((await bridge.handle_interaction(payload)).body())
                data = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                return json_response({"error": "body is not valid JSON (or a form with a JSON payload)"}, 400)
            if not isinstance(data, dict):
                return json_response({"error": "body must be a JSON object"}, 400)
            if data.get("type") == "url_verification":
                challenge = data.get("challenge")
                if not isinstance(challenge, str):
                    return json_response({"error": "url_verification without a challenge"}, 400)
                return json_response({"challenge": challenge})
            outcome = await bridge.handle_event(data, request.headers.get("x-slack-retry-num"))
            return json_response(outcome.body())

        return hook


def _signature_ok(verifier: SignatureVerifier, body: bytes, headers) -> bool:
    try:
        return verifier.is_valid(body=body, timestamp=headers.get("x-slack-request-timestamp"),
                                 signature=headers.get("x-slack-signature"))
    except (ValueError, TypeError):   # a timestamp that is not a number
        return False
