"""Microsoft Teams input channel: Bot Framework activities on POST /webhooks/teams/webhook.

Registered in credentials.yml; enabled by the environment (secrets are never committed):

    MICROSOFT_APP_ID                    the Azure Bot's app (client) ID
    MICROSOFT_APP_PASSWORD              its client secret
    MICROSOFT_APP_TENANT_ID             the tenant of a single-tenant bot
    MICROSOFT_APP_TYPE                  SingleTenant (default) or MultiTenant
    BOTFRAMEWORK_OPENID_METADATA_URL    default https://login.botframework.com/v1/.well-known/openidconfiguration
    MICROSOFT_LOGIN_URL                 default https://login.microsoftonline.com

Without the app ID and password (and, single-tenant, the tenant) the channel is disabled: one log line
says so and the webhook answers 503.

Inbound requests are authenticated as the Bot Connector authentication specification says: the OpenID
metadata names the JWKS; both are fetched with aiohttp (timeouts, never blocking the event loop), cached
for a day, refreshed early for an unknown key ID at most every 5 minutes, and fetched again later when
unreachable (the server starts regardless). PyJWT checks the RS256 signature, `iss`
https://api.botframework.com, `aud` = the app ID and `exp`/`nbf` with 5 minutes of clock skew; the token's
`serviceurl` claim must equal the activity's `serviceUrl`, and a key's endorsements must include the
activity's channel. Anything else is a 401 (503 only while no signing key could ever be fetched).

Outbound: a client-credentials token from {MICROSOFT_LOGIN_URL}/{tenant}/oauth2/v2.0/token (multi-tenant:
the botframework.com tenant), scope https://api.botframework.com/.default, cached until shortly before it
expires. Replies go to {serviceUrl}/v3/conversations/{id}/activities/{replyToId}, with a typing indicator
while the turn runs. Our bearer token is only ever sent to a service URL that Microsoft signed.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict
from urllib.parse import quote

import jwt
from rasa.core.channels.channel import InputChannel, UserMessage
from sanic import Blueprint
from sanic.request import Request
from sanic.response import HTTPResponse
from yarl import URL

from assistant.rasa import render_teams
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

DEFAULT_OPENID_URL = "https://login.botframework.com/v1/.well-known/openidconfiguration"
DEFAULT_LOGIN_URL = "https://login.microsoftonline.com"
ISSUER = "https://api.botframework.com"
SCOPE = "https://api.botframework.com/.default"
MULTI_TENANT_AUTHORITY = "botframework.com"
CLOCK_SKEW = 300
KEYS_MAX_AGE = 24 * 3600          # refetch the metadata and keys daily
UNKNOWN_KID_COOLDOWN = 300        # an unknown key ID refetches at most this often
RETRY_AFTER_FAILURE = 30          # unreachable metadata: try again after this
MAX_DOCUMENT_BYTES = 1024 * 1024
TYPING_EVERY = 3.0
APP_TYPES = {"singletenant": "SingleTenant", "multitenant": "MultiTenant"}


@dataclass
class TeamsConfig:
    app_id: str = ""
    app_password: str = ""
    tenant_id: str = ""
    app_type: str = "SingleTenant"
    openid_url: str = DEFAULT_OPENID_URL
    login_url: str = DEFAULT_LOGIN_URL
    turn_timeout: float = 7.0
    http_timeout: float = 5.0
    problem: str = ""

    @classmethod
    def from_env(cls, env: dict | None = None) -> TeamsConfig:
        env = os.environ if env is None else env
        raw_type = (env.get("MICROSOFT_APP_TYPE") or "SingleTenant").strip()
        app_type = APP_TYPES.get(raw_type.lower(), "")
        cfg = cls(app_id=(env.get("MICROSOFT_APP_ID") or "").strip(),
                  app_password=(env.get("MICROSOFT_APP_PASSWORD") or "").strip(),
                  tenant_id=(env.get("MICROSOFT_APP_TENANT_ID") or "").strip(),
                  app_type=app_type or raw_type,
                  openid_url=(env.get("BOTFRAMEWORK_OPENID_METADATA_URL") or DEFAULT_OPENID_URL).strip(),
                  login_url=(env.get("MICROSOFT_LOGIN_URL") or DEFAULT_LOGIN_URL).strip().rstrip("/"),
                  turn_timeout=turn_timeout(), http_timeout=http_timeout())
        if not cfg.app_id or not cfg.app_password:
            cfg.problem = "set MICROSOFT_APP_ID and MICROSOFT_APP_PASSWORD"
        elif not app_type:
            cfg.problem = f"MICROSOFT_APP_TYPE={raw_type!r} is not SingleTenant or MultiTenant"
        elif app_type == "SingleTenant" and not cfg.tenant_id:
            cfg.problem = "a SingleTenant bot needs MICROSOFT_APP_TENANT_ID"
        return cfg

    @property
    def enabled(self) -> bool:
        return not self.problem

    @property
    def token_url(self) -> str:
        authority = self.tenant_id if self.app_type == "SingleTenant" else MULTI_TENANT_AUTHORITY
        return f"{self.login_url}/{authority}/oauth2/v2.0/token"


class AuthError(Exception):
    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class KeysUnavailable(AuthError):
    def __init__(self) -> None:
        super().__init__("Bot Framework signing keys are not available yet; try again shortly.", 503)


class HttpClient:
    """One aiohttp session for the keys, the token and the replies; every call has a timeout."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._session = None

    def session(self):
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def get_json(self, url: str) -> Any:
        async with self.session().get(url, headers={"Accept": "application/json"}) as resp:
            if resp.status != 200:
                raise OSError(f"HTTP {resp.status}")
            body = await resp.content.read(MAX_DOCUMENT_BYTES + 1)
            if len(body) > MAX_DOCUMENT_BYTES:
                raise OSError("document too large")
            return json.loads(body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# ---------------------------------------------------------------------- inbound authentication
@dataclass
class SigningKey:
    key: Any                      # PyJWK
    endorsements: list | None  # channels the key may sign for; None = not stated


class OpenIdKeys:
    """Bot Framework signing keys: OpenID metadata → jwks_uri → JWKS, cached and refreshed."""

    def __init__(self, metadata_url: str, http: HttpClient, max_age: float = KEYS_MAX_AGE,
                 cooldown: float = UNKNOWN_KID_COOLDOWN, retry_after: float = RETRY_AFTER_FAILURE) -> None:
        self.metadata_url = metadata_url
        self.http = http
        self.max_age = max_age
        self.cooldown = cooldown
        self.retry_after = retry_after
        self.keys: Dict[str, SigningKey] = {}
        self.fetched_at: float | None = None
        self.attempted_at: float | None = None
        self.fetches = 0
        self._lock: asyncio.Lock | None = None

    def _due(self, now: float) -> bool:
        if self.attempted_at is not None and now - self.attempted_at < self.retry_after and (
                self.fetched_at is None or self.fetched_at < self.attempted_at):
            return False   # the last attempt failed recently: do not hammer an unreachable endpoint
        return self.fetched_at is None or now - self.fetched_at > self.max_age

    async def refresh(self, force: bool = False) -> bool:
        """Fetch the metadata and keys; keep the old keys if that fails. True when fresh keys arrived."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        started = time.monotonic()
        async with self._lock:
            if self.fetched_at is not None and self.fetched_at >= started:
                return True   # another request refreshed while this one waited
            if not force and not self._due(time.monotonic()):
                return False
            self.attempted_at = time.monotonic()
            self.fetches += 1
            try:
                metadata = await self.http.get_json(self.metadata_url)
                jwks_uri = metadata.get("jwks_uri") if isinstance(metadata, dict) else None
                if not isinstance(jwks_uri, str) or not jwks_uri:
                    raise ValueError("no jwks_uri in the OpenID metadata")
                keys = parse_jwks(await self.http.get_json(jwks_uri))
                if not keys:
                    raise ValueError("no usable RSA signing key in the JWKS")
            except Exception as exc:  # noqa: BLE001 - network, JSON, shape: keep the old keys
                log.warning("Bot Framework OpenID metadata/keys could not be fetched (%s: %s); %s",
                            type(exc).__name__, exc, "keeping the cached keys" if self.keys
                            else f"retrying in {self.retry_after:.0f} s")
                return False
            self.keys = keys
            self.fetched_at = time.monotonic()
            log.info("Bot Framework signing keys loaded (%d)", len(keys))
            return True

    async def get(self, kid: str) -> SigningKey | None:
        now = time.monotonic()
        if self._due(now):
            await self.refresh()
        key = self.keys.get(kid)
        # An unknown key ID may mean Microsoft rotated keys: refetch, but at most once per cool-down counted
        # from the last attempt, so tokens with made-up key IDs cannot make every request fetch.
        if key is None and self.keys and (self.attempted_at is None or
                                          time.monotonic() - self.attempted_at > self.cooldown):
            await self.refresh(force=True)
            key = self.keys.get(kid)
        if not self.keys:
            raise KeysUnavailable()
        return key


def parse_jwks(document: Any) -> Dict[str, SigningKey]:
    from jwt import PyJWK

    keys: Dict[str, SigningKey] = {}
    listed = document.get("keys") if isinstance(document, dict) else None
    for raw in listed if isinstance(listed, list) else []:
        if not isinstance(raw, dict) or raw.get("kty") != "RSA" or not isinstance(raw.get("kid"), str):
            continue
        if raw.get("use") not in (None, "sig"):
            continue
        try:
            key = PyJWK(raw, algorithm="RS256")
        except jwt.exceptions.PyJWTError:
            continue
        endorsements = raw.get("endorsements")
        keys[raw["kid"]] = SigningKey(key, list(endorsements) if isinstance(endorsements, list) else None)
    return keys


class BotFrameworkAuth:
    """Validates the JWT that the Bot Connector service sends with every activity."""

    def __init__(self, app_id: str, keys: OpenIdKeys) -> None:
        self.app_id = app_id
        self.keys = keys

    async def verify(self, header: str | None) -> tuple:
        """(claims, signing key) of a valid token, else AuthError."""
        if not header:
            raise AuthError("No authorization header provided.")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("No Bearer token provided in Authorization header.")
        token = token.strip()
        try:
            head = jwt.get_unverified_header(token)
        except jwt.exceptions.PyJWTError:
            raise AuthError("Could not validate JWT token.") from None
        if head.get("alg") != "RS256":
            raise AuthError("Could not validate JWT token: only RS256 is accepted.")
        kid = head.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("Could not validate JWT token: no key ID.")
        signing = await self.keys.get(kid)
        if signing is None:
            raise AuthError("Could not validate JWT token: unknown signing key.")
        try:
            claims = jwt.decode(token, signing.key.key, algorithms=["RS256"], audience=self.app_id, issuer=ISSUER,
                                leeway=CLOCK_SKEW, options={"require": ["exp", "iss", "aud"]})
        except jwt.exceptions.PyJWTError as exc:
            log.info("Bot Framework token refused: %s", type(exc).__name__)
            raise AuthError("Could not validate JWT token.") from None
        return claims, signing

    @staticmethod
    def check_activity(claims: dict, signing: SigningKey, activity: dict) -> None:
        """The token must be for this activity's service URL, by a key endorsed for its channel."""
        service_url = activity.get("serviceUrl")
        claim = claims.get("serviceurl", claims.get("serviceUrl"))
        if not isinstance(service_url, str) or not service_url or claim != service_url:
            raise AuthError("Unauthorized: the token's serviceurl does not match the activity's serviceUrl.")
        channel = activity.get("channelId")
        if signing.endorsements is not None and channel not in signing.endorsements:
            raise AuthError("Unauthorized: the signing key is not endorsed for this channel.")


# ---------------------------------------------------------------------- outbound
class AppToken:
    """Client-credentials token for the Bot Connector API, cached until shortly before it expires."""

    def __init__(self, config: TeamsConfig, http: HttpClient) -> None:
        self.config = config
        self.http = http
        self._token: str | None = None
        self._valid_until = 0.0
        self._lock: asyncio.Lock | None = None
        self.fetches = 0

    def invalidate(self) -> None:
        self._token = None
        self._valid_until = 0.0

    async def get(self) -> str:
        if self._token and time.monotonic() < self._valid_until:
            return self._token
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._token and time.monotonic() < self._valid_until:
                return self._token
            form = {"grant_type": "client_credentials", "client_id": self.config.app_id,
                    "client_secret": self.config.app_password, "scope": SCOPE}
            self.fetches += 1
            async with self.http.session().post(self.config.token_url, data=form) as resp:
                body = await resp.content.read(MAX_DOCUMENT_BYTES)
                if resp.status != 200:
                    raise OSError(f"token endpoint answered HTTP {resp.status}")
            data = json.loads(body)
            token, expires_in = data.get("access_token"), data.get("expires_in")
            if not isinstance(token, str) or not token:
                raise ValueError("no access_token in the token response")
            try:
                lifetime = float(expires_in)
            except (TypeError, ValueError):
                lifetime = 3600.0
            # Renew 5 minutes before expiry (half the lifetime for short-lived tokens).
            self._valid_until = time.monotonic() + lifetime - min(300.0, lifetime / 2)
            self._token = token
            return token


@dataclass
class ReplyTarget:
    service_url: str
    conversation_id: str
    reply_to_id: str
    bot: dict
    user: dict

    @property
    def url(self) -> str:
        return (f"{self.service_url.rstrip('/')}/v3/conversations/{quote(self.conversation_id, safe='')}"
                f"/activities/{quote(self.reply_to_id, safe='')}")


class Connector:
    """POSTs activities to the Bot Connector service (replies and typing)."""

    def __init__(self, http: HttpClient, token: AppToken) -> None:
        self.http = http
        self.token = token

    async def send(self, target: ReplyTarget, activity: dict) -> bool:
        body = {**activity, "from": target.bot, "recipient": target.user,
                "conversation": {"id": target.conversation_id}, "replyToId": target.reply_to_id}
        for attempt in (1, 2):
            try:
                token = await self.token.get()
                # encoded=True: keep ";", "@" and ":" of Teams conversation IDs percent-encoded, as Microsoft's
                # SDKs send them (a raw ";" can end the path segment on the server).
                async with self.http.session().post(URL(target.url, encoded=True), json=body,
                                                    headers={"Authorization": f"Bearer {token}"}) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        return True
                    if resp.status in (401, 403) and attempt == 1:
                        self.token.invalidate()
                        continue
                    if resp.status == 429 and attempt == 1:
                        await asyncio.sleep(min(2.0, float(resp.headers.get("Retry-After") or 1)))
                        continue
                    log.error("Bot Connector refused the %s activity: HTTP %s", activity.get("type"), resp.status)
                    return False
            except Exception as exc:  # noqa: BLE001 - timeouts, connection errors, token failures
                log.error("sending the %s activity failed: %s", activity.get("type"), type(exc).__name__)
                return False
        return False


# ---------------------------------------------------------------------- activities
_AT = re.compile(r"<at[^>]*>.*?</at>", re.IGNORECASE | re.DOTALL)


def strip_mentions(text: str, entities: Any, bot_id: str) -> str:
    """Teams puts "<at>Name</at>" in the text for every mention: the bot's is removed (it addressed the
    message), other people's too (names carry no clinical meaning and should not sit in a tracker)."""
    for entity in entities if isinstance(entities, list) else []:
        if isinstance(entity, dict) and entity.get("type") == "mention" and isinstance(entity.get("text"), str):
            text = text.replace(entity["text"], " ")
    text = _AT.sub(" ", text)
    return " ".join(html.unescape(text).split())


def mentions_bot(activity: dict, bot_id: str) -> bool:
    entities = activity.get("entities") if isinstance(activity.get("entities"), list) else []
    mentions = [e for e in entities if isinstance(e, dict) and e.get("type") == "mention"]
    if mentions:
        return any(isinstance(e.get("mentioned"), dict) and e["mentioned"].get("id") == bot_id for e in mentions)
    return "<at>" in str(activity.get("text") or "").lower()


def _is_file(attachment: Any) -> bool:
    ctype = attachment.get("contentType") if isinstance(attachment, dict) else None
    return isinstance(ctype, str) and not ctype.startswith("text/html")


@dataclass
class Incoming:
    text: str
    sender_id: str
    target: ReplyTarget
    kind: str
    selected: str | None = None
    user: str = ""          # the Teams user (pseudonymised in the audit trail)


class TeamsBridge:
    """Filter, identify, de-duplicate and answer Bot Framework activities."""

    def __init__(self, config: TeamsConfig, on_new_message: Callable[[UserMessage], Awaitable[Any]],
                 input_channel: str = "teams") -> None:
        self.config = config
        self.on_new_message = on_new_message
        self.input_channel = input_channel
        self.http = HttpClient(config.http_timeout)
        self.keys = OpenIdKeys(config.openid_url, self.http)
        self.auth = BotFrameworkAuth(config.app_id, self.keys)
        self.token = AppToken(config, self.http)
        self.connector = Connector(self.http, self.token)
        self.dedup = Deduplicator()
        self.tasks = TaskSet()

    def attach(self, app) -> None:
        self.dedup.attach(app)

    async def close(self) -> None:
        await self.tasks.drain()
        await self.dedup.close()
        await self.http.close()

    def parse(self, activity: dict):
        """An Incoming to answer, or the Disposition saying why not."""
        atype = activity.get("type")
        if atype != "message":
            return ignored(f"activity type {str(atype)[:40]}")
        activity_id = activity.get("id")
        conversation = activity.get("conversation") if isinstance(activity.get("conversation"), dict) else {}
        sender = activity.get("from") if isinstance(activity.get("from"), dict) else {}
        bot = activity.get("recipient") if isinstance(activity.get("recipient"), dict) else {}
        conv_id, user_id, bot_id = conversation.get("id"), sender.get("id"), bot.get("id")
        if not all(isinstance(v, str) and v for v in (activity_id, conv_id, user_id, bot_id)):
            return ignored("missing id, conversation, from or recipient")
        if user_id == bot_id or sender.get("role") == "bot":
            return ignored("bot message")
        channel_data = activity.get("channelData") if isinstance(activity.get("channelData"), dict) else {}
        tenant = conversation.get("tenantId") or (channel_data.get("tenant") or {}).get("id") or ""
        if self.config.app_type == "SingleTenant" and tenant and tenant != self.config.tenant_id:
            log.warning("Teams activity from another tenant ignored")
            return ignored("other tenant")
        scope = conversation.get("conversationType") or ("groupChat" if conversation.get("isGroup") else "personal")
        value = activity.get("value")
        selected = None
        if isinstance(value, dict) and isinstance(value.get(render_teams.REPLY_KEY), str):
            text = value[render_teams.REPLY_KEY].strip()   # a card button: no mention needed
            label = value.get(render_teams.LABEL_KEY)
            selected = label if isinstance(label, str) and label else text
            if not text:
                return ignored("empty card submit")
        elif value is not None and not activity.get("text"):
            return ignored("card submit without a reply")
        else:
            raw = activity.get("text") if isinstance(activity.get("text"), str) else ""
            if scope != "personal" and not mentions_bot(activity, bot_id):
                return ignored("not mentioned")
            text = strip_mentions(raw, activity.get("entities"), bot_id)
            attachments = activity.get("attachments") if isinstance(activity.get("attachments"), list) else []
            if not text and any(_is_file(a) for a in attachments):
                return ignored("files only")
        service_url = activity.get("serviceUrl")
        target = ReplyTarget(service_url, conv_id, activity_id, {"id": bot_id, "name": bot.get("name")},
                             {"id": user_id, "name": sender.get("name")})
        if scope == "channel":
            thread = conv_id if ";messageid=" in conv_id else f"{conv_id};messageid={activity_id}"
            sender_id = conversation_id("teams", tenant, thread)
        elif scope == "groupChat":   # no threads: one conversation per person, never shared
            sender_id = conversation_id("teams", tenant, conv_id, sender.get("aadObjectId") or user_id)
        else:
            sender_id = conversation_id("teams", tenant, conv_id)
        return Incoming(text, sender_id, target, scope, selected,
                        f"teams:{tenant}:{sender.get('aadObjectId') or user_id}")

    async def handle(self, activity: dict) -> Disposition:
        incoming = self.parse(activity)
        if isinstance(incoming, Disposition):
            return incoming
        key = f"teams:{incoming.target.conversation_id}:{incoming.target.reply_to_id}"
        if not await self.dedup.claim(key):
            log.info("Teams activity already handled: not answered again")
            return Disposition("duplicate")
        self.tasks.spawn(self.answer(incoming, keys=[key]))
        return Disposition("accepted", incoming.kind)

    async def _typing(self, target: ReplyTarget, done: asyncio.Event) -> None:
        """'Typing…' now and every few seconds until the turn ends; never cut off mid-request, so it cannot
        land after the answer."""
        while not done.is_set():
            await self.connector.send(target, render_teams.typing())
            try:
                await asyncio.wait_for(done.wait(), TYPING_EVERY)
            except asyncio.TimeoutError:
                continue

    async def answer(self, incoming: Incoming, keys=()) -> None:
        try:
            await self._answer(incoming)
        finally:
            await self.dedup.confirm(*keys)

    async def _answer(self, incoming: Incoming) -> None:
        done = asyncio.Event()
        typing = self.tasks.spawn(self._typing(incoming.target, done), name="cg81-teams-typing")
        try:
            turn = await run_turn(self.on_new_message, incoming.text, incoming.sender_id, self.input_channel,
                                  metadata={"platform": "teams", "conversation": incoming.kind},
                                  timeout=self.config.turn_timeout, user_id=incoming.user or None)
        finally:
            done.set()
        try:
            await asyncio.wait_for(asyncio.shield(typing), min(1.0, self.config.http_timeout))
        except (asyncio.TimeoutError, asyncio.CancelledError):
            typing.cancel()
        for activity in render_teams.render_turn(turn.messages, selected=incoming.selected):
            await self.connector.send(incoming.target, activity)
        log.info("Teams turn for %s: %s in %.0f ms", incoming.sender_id, turn.status, turn.seconds * 1000)


# ---------------------------------------------------------------------- the Rasa input channel
class TeamsInput(InputChannel):
    """Rasa input channel "teams": POST /webhooks/teams/webhook."""

    def __init__(self, config: TeamsConfig | None = None) -> None:
        self.config = config or TeamsConfig.from_env()
        self.bridge: TeamsBridge | None = None

    @classmethod
    def name(cls) -> str:
        return "teams"

    @classmethod
    def from_credentials(cls, credentials: Dict[str, Any] | None) -> TeamsInput:
        """Secrets come from the environment only; a missing one disables the channel, never the server."""
        config = TeamsConfig.from_env()
        if config.enabled:
            log.info("Microsoft Teams channel enabled (%s)", config.app_type)
        else:
            log.info("Microsoft Teams channel disabled: %s; /webhooks/teams/webhook answers 503", config.problem)
        return cls(config)

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        hook = Blueprint("cg81_teams_webhook", __name__)
        config = self.config
        bridge = self.bridge = TeamsBridge(config, on_new_message, self.name())

        @hook.listener("after_server_start")
        async def start(app, loop) -> None:
            if config.enabled:
                bridge.attach(app)
                bridge.tasks.spawn(bridge.keys.refresh(), name="cg81-teams-keys")   # never blocks start-up

        @hook.listener("before_server_stop")
        async def stop(app, loop) -> None:
            await bridge.close()

        @hook.route("/", methods=["GET"])
        async def health(request: Request) -> HTTPResponse:
            return json_response({"status": "ok" if config.enabled else "disabled",
                                  "signing_keys": len(bridge.keys.keys)})

        @hook.route("/webhook", methods=["POST"], stream=True)
        async def webhook(request: Request) -> HTTPResponse:
            if not config.enabled:
                return json_response({"error": f"the Teams channel is not configured on this server "
                                               f"({config.problem})"}, 503)
            body = await read_body(request, MAX_BODY_BYTES)
            if body is None:
                return json_response({"error": f"request body over {MAX_BODY_BYTES} bytes"}, 413)
            try:
                claims, signing = await bridge.auth.verify(request.headers.get("authorization"))
            except AuthError as exc:
                return json_response({"error": exc.message}, exc.status)
            try:
                activity = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                return json_response({"error": "body is not valid JSON"}, 400)
            if not isinstance(activity, dict):
                return json_response({"error": "body must be a JSON object (an activity)"}, 400)
            try:
                bridge.auth.check_activity(claims, signing, activity)
            except AuthError as exc:
                return json_response({"error": exc.message}, exc.status)
            bridge.attach(request.app)
            outcome = await bridge.handle(activity)
            return json_response(outcome.body())

        return hook
