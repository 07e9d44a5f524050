"""What the Slack and Teams channels share: the turn runner, de-duplication, background tasks, body limits.

Both platforms want a fast acknowledgement and the answer later through their API, so a turn runs in a
background task: `run_turn` hands the message to Rasa exactly as the REST channel does (same NLU, slots,
lock store, actions and payload), collects the bot messages whole, and turns a failure, an empty turn or a
stalled one (action server down or hanging) into the service-unavailable message, so a clinician is never
left with silence. Platform retries are dropped by `Deduplicator`: in memory by default, in Redis when the
Rasa server runs with a Redis lock store, so several replicas agree on what was already answered.

Logs name conversations by their hashed ID and never carry message text.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict

from rasa.core.channels.channel import OutputChannel, UserMessage
from sanic import response
from sanic.request import Request
from sanic.response import HTTPResponse

from assistant import answer
from assistant.dialogue import clean
from assistant.rasa import governance
from assistant.rasa.channel import reply_without_nlu

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
DEFAULT_TURN_TIMEOUT = 7.0     # + the reply's own round trip stays inside the 10 s promised to clinicians
DEFAULT_HTTP_TIMEOUT = 5.0
DEFAULT_DEDUP_TTL = 3600       # an answered delivery is remembered this long (platform retries come sooner)
PENDING_TTL = 30.0             # a delivery being answered: if this replica dies before acknowledging it, the
                               # platform's retry (Slack's first comes after about a minute) is answered, not lost
MEMORY_DEDUP_MAX = 100_000


def env_float(name: str, default: float, env: dict | None = None) -> float:
    raw = (env if env is not None else os.environ).get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        log.warning("%s=%r is not a number: using %s", name, raw, default)
        return default
    return value if value > 0 else default


def turn_timeout() -> float:
    return env_float("CG81_CHANNEL_TURN_TIMEOUT", DEFAULT_TURN_TIMEOUT)


def http_timeout() -> float:
    return env_float("CG81_CHANNEL_HTTP_TIMEOUT", DEFAULT_HTTP_TIMEOUT)


def conversation_id(platform: str, *parts: str) -> str:
    """A stable Rasa sender ID for one conversation: short, safe in URLs and logs, and it does not expose
    the platform's user or channel IDs in the tracker."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()[:32]
    return f"{platform}-{digest}"


def json_response(body: dict, status: int = 200, headers: dict | None = None) -> HTTPResponse:
    return response.json(body, status=status, headers=headers)


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes | None:
    """The raw body of a streamed request, or None when it is over `limit` (read no further than that)."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            if int(length) > limit:
                return None
        except ValueError:
            return None
    if request.stream is None:   # not a streamed route (tests may call handlers directly)
        body = request.body or b""
        return body if len(body) <= limit else None
    chunks, size = [], 0
    while True:
        chunk = await request.stream.read()
        if chunk is None:
            break
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------------- the turn
class TurnCollector(OutputChannel):
    """Keeps each bot message whole (text, buttons and custom payload together), unlike Rasa's
    CollectingOutputChannel, which splits texts on blank lines and the payload into its own message."""

    KEYS = ("text", "buttons", "quick_replies", "custom", "image", "attachment")

    def __init__(self) -> None:
        self.messages: list = []

    @classmethod
    def name(cls) -> str:
        return "collector"

    async def send_response(self, recipient_id: str, message: Dict[str, Any]) -> None:
        kept = {k: message[k] for k in self.KEYS if message.get(k)}
        if "quick_replies" in kept and "buttons" not in kept:
            kept["buttons"] = kept.pop("quick_replies")
        if kept:
            self.messages.append(kept)

    async def send_text_message(self, recipient_id: str, text: str, **kwargs: Any) -> None:
        self.messages.append({"text": text})


@dataclass
class Turn:
    messages: list
    status: str            # ok | early | timeout | error | empty
    seconds: float = 0.0
    failed: bool = field(init=False)
    turn_id: str | None = None   # the audit record, for feedback

    def __post_init__(self) -> None:
        self.failed = self.status in ("timeout", "error", "empty")


UNAVAILABLE = [{"text": answer.SERVICE_UNAVAILABLE}]


async def run_turn(on_new_message: Callable[[UserMessage], Awaitable[Any]], text: str, sender_id: str,
                   input_channel: str, metadata: dict | None = None,
                   timeout: float | None = None, user_id: str | None = None,
                   collector: OutputChannel | None = None) -> Turn:
    """One clinician message through Rasa, on every channel alike. Patient identifiers are removed before
    Rasa (trackers, logs) sees the text and the reply reminds the clinician; the turn is appended to the
    audit trail. Never raises: a failure becomes the service-unavailable text."""
    redaction = governance.redact(text)
    turn = await _run_turn(on_new_message, redaction.text, sender_id, input_channel, metadata, timeout, collector)
    turn.messages = governance.with_reminder(turn.messages, redaction)
    turn.turn_id = await governance.audit_turn(channel=input_channel, user=user_id or sender_id,
                                               conversation=sender_id, redaction=redaction,
                                               messages=turn.messages, seconds=turn.seconds, status=turn.status)
    return turn


async def _run_turn(on_new_message: Callable[[UserMessage], Awaitable[Any]], text: str, sender_id: str,
                    input_channel: str, metadata: dict | None, timeout: float | None,
                    collector: OutputChannel | None = None) -> Turn:
    early = reply_without_nlu(text)
    if early is not None:
        return Turn([{"text": early}], "early")
    collector = collector if collector is not None else TurnCollector()
    message = UserMessage(clean(text), collector, sender_id, input_channel=input_channel, metadata=metadata)
    limit = timeout if timeout is not None else turn_timeout()
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(on_new_message(message), limit)
    except asyncio.TimeoutError:
        log.warning("turn for %s gave no answer within %.1f s: service-unavailable sent", sender_id, limit)
        return Turn(list(UNAVAILABLE), "timeout", time.monotonic() - t0)
    except Exception as exc:  # noqa: BLE001 - the clinician must get a reply whatever failed
        log.error("turn for %s failed (%s): service-unavailable sent", sender_id, type(exc).__name__,
                  exc_info=log.isEnabledFor(logging.DEBUG))
        return Turn(list(UNAVAILABLE), "error", time.monotonic() - t0)
    elapsed = time.monotonic() - t0
    if not collector.messages:
        log.warning("turn for %s produced no message: service-unavailable sent", sender_id)
        return Turn(list(UNAVAILABLE), "empty", elapsed)
    return Turn(collector.messages, "ok", elapsed)


# ---------------------------------------------------------------------- de-duplication
class MemoryDedup:
    """Keys seen recently: first claimed for PENDING_TTL while the turn runs, then kept for `ttl` once
    answered. Oldest entries go first beyond `max_entries`."""

    backend = "memory"

    def __init__(self, ttl: float = DEFAULT_DEDUP_TTL, max_entries: int = MEMORY_DEDUP_MAX,
                 pending_ttl: float = PENDING_TTL) -> None:
        self.ttl = ttl
        self.pending_ttl = pending_ttl
        self.max_entries = max_entries
        self._seen: OrderedDict = OrderedDict()

    def _expire(self, now: float) -> None:
        while self._seen:
            oldest = next(iter(self._seen))
            if self._seen[oldest] > now and len(self._seen) < self.max_entries:
                break
            self._seen.pop(oldest)

    async def claim(self, key: str) -> bool:
        now = time.monotonic()
        self._expire(now)
        expires = self._seen.get(key)
        if expires is not None and expires > now:
            return False
        self._seen[key] = now + min(self.pending_ttl, self.ttl)
        self._seen.move_to_end(key)
        return True

    async def confirm(self, key: str) -> None:
        if key in self._seen:
            self._seen[key] = time.monotonic() + self.ttl
            self._seen.move_to_end(key)

    async def close(self) -> None:
        self._seen.clear()


class RedisDedup:
    """SET NX with expiry: the first replica to see a delivery claims it; the others drop it. If Redis
    fails, the claim falls back to this process's memory (a retry may then be answered twice on two
    replicas, but never silently dropped)."""

    backend = "redis"

    def __init__(self, client, prefix: str = "", ttl: float = DEFAULT_DEDUP_TTL,
                 pending_ttl: float = PENDING_TTL) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = max(1, int(ttl))
        self.pending_ttl = max(1, int(min(pending_ttl, ttl)))
        self.fallback = MemoryDedup(ttl, pending_ttl=pending_ttl)
        self._warned = 0.0

    def _key(self, key: str) -> str:
        return f"{self.prefix}cg81:dedup:{key}"

    def _warn(self, exc: Exception) -> None:
        if time.monotonic() - self._warned > 60:
            log.warning("Redis de-duplication failed (%s): using process memory", type(exc).__name__)
            self._warned = time.monotonic()

    async def claim(self, key: str) -> bool:
        try:
            created = await self.client.set(self._key(key), b"1", nx=True, ex=self.pending_ttl)
        except Exception as exc:  # noqa: BLE001 - redis.exceptions.* and OSError alike
            self._warn(exc)
            return await self.fallback.claim(key)
        return bool(created)

    async def confirm(self, key: str) -> None:
        try:
            await self.client.expire(self._key(key), self.ttl)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)
        await self.fallback.confirm(key)

    async def close(self) -> None:
        try:
            await self.client.close()
        except Exception:  # noqa: BLE001
            pass


def redis_client_for_lock_store(lock_store) -> tuple:
    """(redis.asyncio client, key prefix) on the same server and database as Rasa's RedisLockStore."""
    import redis.asyncio as aioredis

    pool = lock_store.red.connection_pool
    kwargs = pool.connection_kwargs
    options = {k: kwargs[k] for k in ("host", "port", "db", "username", "password", "socket_timeout")
               if kwargs.get(k) is not None}
    if pool.connection_class.__name__ == "SSLConnection":
        options["ssl"] = True
        options.update({k: kwargs[k] for k in ("ssl_keyfile", "ssl_certfile", "ssl_ca_certs", "ssl_cert_reqs")
                        if kwargs.get(k) is not None})
    options.setdefault("socket_timeout", 2.0)
    options["socket_connect_timeout"] = options["socket_timeout"]
    prefix = str(getattr(lock_store, "key_prefix", "") or "")
    prefix = prefix[: -len("lock:")] if prefix.endswith("lock:") else prefix
    return aioredis.Redis(**options), prefix


def make_dedup(app=None):
    """Redis when the Rasa agent's lock store is a RedisLockStore (endpoints.yml `lock_store`, e.g. the
    service's GuidelineLockStore with REDIS_URL set) or CG81_DEDUP_REDIS_URL is set; else process memory."""
    ttl = env_float("CG81_DEDUP_TTL", DEFAULT_DEDUP_TTL)
    url = os.environ.get("CG81_DEDUP_REDIS_URL")
    if url:
        import redis.asyncio as aioredis

        return RedisDedup(aioredis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0), ttl=ttl)
    from rasa.core.lock_store import RedisLockStore

    agent = getattr(getattr(app, "ctx", None), "agent", None) if app is not None else None
    lock_store = getattr(agent, "lock_store", None)
    if isinstance(lock_store, RedisLockStore):   # Rasa's, or a subclass such as the service's atomic one
        try:
            client, prefix = redis_client_for_lock_store(lock_store)
            return RedisDedup(client, prefix, ttl)
        except Exception as exc:  # noqa: BLE001
            log.warning("cannot use the Redis lock store for de-duplication (%s): using memory",
                        type(exc).__name__)
    return MemoryDedup(ttl)


class Deduplicator:
    """Chooses its backend on first use, once Rasa has loaded the agent (and with it the lock store)."""

    def __init__(self) -> None:
        self.store = None

    def attach(self, app) -> None:
        if self.store is None and getattr(getattr(app, "ctx", None), "agent", None) is not None:
            self.store = make_dedup(app)
            log.info("%s de-duplication of platform retries", self.store.backend)

    async def claim(self, *keys: str) -> bool:
        """True when none of `keys` was seen before (all are then held while the turn runs); False for a
        repeat. Call `confirm` with the same keys once the answer is out."""
        if self.store is None:
            self.store = make_dedup(None)
        for key in keys:
            if not await self.store.claim(key):
                return False
        return True

    async def confirm(self, *keys: str) -> None:
        """The delivery was answered: remember it for the full TTL."""
        if self.store is not None:
            for key in keys:
                await self.store.confirm(key)

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()


# ---------------------------------------------------------------------- background work
class TaskSet:
    """Background turns, referenced until done (so they are not garbage-collected mid-turn) and drained
    briefly on shutdown."""

    def __init__(self) -> None:
        self.tasks: set = set()

    def spawn(self, coro, name: str = "cg81-turn") -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("background turn failed: %s", type(exc).__name__, exc_info=(type(exc), exc, exc.__traceback__))

    async def drain(self, timeout: float = 10.0) -> None:
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=timeout)
            for task in list(self.tasks):
                task.cancel()


@dataclass
class Disposition:
    """What a connector did with one delivery: answered, duplicate or ignored (with why)."""

    status: str
    reason: str = ""

    def body(self) -> dict:
        out = {"ok": True, "handled": self.status}
        if self.reason:
            out["reason"] = self.reason
        return out


def ignored(reason: str) -> Disposition:
    return Disposition("ignored", reason)
