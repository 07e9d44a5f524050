"""Tracker store and lock store for running the assistant as a service (imported only by the Rasa server).

`GuidelineTrackerStore` (endpoints.yml `tracker_store`): Rasa's SQL tracker store, made fit for service:
- The database comes from the environment (TRACKER_STORE_URL, ...: assistant/rasa/service_config.py):
  PostgreSQL for deployments, a SQLite file under var/ by default. A URL that is wrong, unreachable or
  lacks credentials stops start-up with one line naming the setting (Rasa's own SQL store would retry
  for ever, or fall back to memory).
- No silent fallback. Rasa wraps every tracker store in a FailSafeTrackerStore that, when the database
  fails, logs and carries on with a per-process in-memory copy: a clinician would get answers that no
  other replica, and no restart, remembers. `arm_fail_safe` (called by the health channel,
  assistant/rasa/health.py, once the agent is loaded) gives that wrapper an error callback that records
  the failure (the health endpoint turns "degraded") and re-raises it, so the turn fails and the channel
  answers with "... no recommendation has been given." instead.
- Per-turn cost does not grow with the conversation. Rasa rebuilds, featurises and sends to the action
  server every event of the loaded tracker on every turn; the SQL store loads only the latest session.
  Once a session holds CG81_SESSION_MAX_TURNS user messages (default 10), the next turn starts a new
  session that carries every slot over (the patient profile, topic, pending clarification): the same
  events Rasa's own `action_session_start` writes when it carries slots over. A session that ends by
  expiry (domain.yml `session_config`, or CG81_SESSION_MINUTES) carries nothing over: the patient
  context is cleared. Every event stays in the database (`retrieve_full_tracker` returns them all).
- Sessions are found by event id, not by timestamp (Rasa's query): replicas whose clocks differ by a
  few milliseconds cannot split a session.
- Database calls run in a small thread pool, so a slow database does not stall the event loop (and the
  health endpoint still answers while it is down).

`GuidelineLockStore` (endpoints.yml `lock_store`): with REDIS_URL set, a `RedisLockStore` whose ticket
operations are atomic Lua scripts. Rasa's own issues a ticket by GET, modify, SET (Rasa issue #9213): two
replicas receiving messages for one conversation at the same moment can both get ticket 0, process the
conversation concurrently and lose or duplicate a turn. Without REDIS_URL it is Rasa's in-process lock
store (one replica only).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, AsyncGenerator, Iterable, List

import sqlalchemy as sa
from rasa.core.lock import TicketLock
from rasa.core.lock_store import LOCK_LIFETIME, InMemoryLockStore, LockError, RedisLockStore
from rasa.core.tracker_store import FailSafeTrackerStore, SQLTrackerStore, TrackerStore
from rasa.shared.core.constants import ACTION_LISTEN_NAME, ACTION_SESSION_START_NAME
from rasa.shared.core.domain import Domain, SessionConfig
from rasa.shared.core.events import ActionExecuted, SessionStarted, SlotSet, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from assistant.rasa import service_config
from assistant.rasa.service_config import ConfigurationError

log = logging.getLogger(__name__)
ROLLOVER = "cg81_rollover"  # SessionStarted metadata key of a session started to bound per-turn cost
_PERSISTED = "_cg81_persisted"  # tracker attribute: how many of its events are already in the database


class TrackerStoreUnavailable(ConnectionError):
    """The conversation store failed during a turn: the turn must fail visibly, not fall back to memory."""


def fail_start(exc: ConfigurationError) -> None:
    """Stop the server during start-up with one line naming the setting (no traceback, no fallback).

    Sanic logs any exception from a start-up listener with its traceback, and Rasa replaces a tracker
    store it cannot import with an in-memory one, so the process ends here."""
    line = f"configuration error: {exc}"
    log.critical(line)
    for handler in logging.getLogger().handlers:
        handler.flush()
    print(line, file=sys.stderr, flush=True)
    os._exit(service_config.EX_CONFIG)


# ---------------------------------------------------------------------- tracker store
# The latest session_started of a conversation, found without scanning its events (created with the table).
_EVENTS = SQLTrackerStore.SQLEvent.__table__
_SESSION_INDEX = sa.Index("ix_events_sender_type_id", _EVENTS.c.sender_id, _EVENTS.c.type_name, _EVENTS.c.id)


class GuidelineTrackerStore(SQLTrackerStore):
    """SQL tracker store configured from the environment; see the module docstring."""

    def __init__(self, domain: Domain | None = None, event_broker: Any = None, **kwargs: Any) -> None:
        try:
            self.settings = service_config.database_settings()
            self.max_turns = service_config.max_turns()
            self.session_minutes = service_config.session_minutes()
            engine = service_config.connect_database(self.settings)
        except ConfigurationError as exc:
            fail_start(exc)
            raise  # only reached when os._exit is patched out
        self.engine = engine
        self._prepare_schema()
        self.sessionmaker = sa.orm.session.sessionmaker(bind=self.engine)
        self._executor = ThreadPoolExecutor(max_workers=int(os.environ.get("SQL_POOL_SIZE", "5")),
                                            thread_name_prefix="cg81-db")
        self.armed = False
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._warned_at = 0.0
        TrackerStore.__init__(self, domain, event_broker, **kwargs)
        log.info("tracker store: %s (sessions roll over every %d user turns)", self.settings.shown,
                 self.max_turns)

    # -- set-up
    def _prepare_schema(self) -> None:
        """Rasa's `events` table (so Rasa's tools still read it) plus one index for the session look-up."""
        try:
            self.Base.metadata.create_all(self.engine)
        except sa.exc.SQLAlchemyError as exc:  # another replica creating the table at the same moment
            log.info("events table: %s", type(exc).__name__)
        try:
            _SESSION_INDEX.create(self.engine, checkfirst=True)
        except sa.exc.SQLAlchemyError as exc:
            log.info("events index: %s", type(exc).__name__)
        if self.settings.dialect == "sqlite":
            with self.engine.connect() as conn:
                # Readers (the web chat's history) never block the writer; a crash loses no committed turn.
                conn.execute(sa.text("PRAGMA journal_mode=WAL"))

            @sa.event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_connection, _record) -> None:
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()

    @property
    def domain(self) -> Domain:
        return self._domain

    @domain.setter
    def domain(self, domain: Domain | None) -> None:
        """The agent hands over the model's domain (the same object its processor reads): apply
        CG81_SESSION_MINUTES to its session expiry, so expiry is set per deployment without retraining."""
        domain = domain or Domain.empty()
        minutes = getattr(self, "session_minutes", None)
        if minutes is not None and domain.session_config.session_expiration_time != minutes:
            domain.session_config = SessionConfig(minutes, domain.session_config.carry_over_slots)
            log.info("session expiry: %g minutes (CG81_SESSION_MINUTES)", minutes)
        self._domain = domain

    # -- errors
    def _failed(self, what: str, exc: BaseException) -> TrackerStoreUnavailable:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300] or type(exc).__name__
        self.last_error, self.last_error_at = f"{what}: {reason}", time.time()
        now = time.monotonic()
        if now - self._warned_at > 10:  # one line per outage burst, not one per turn
            self._warned_at = now
            log.error("tracker store %s failed (%s): the turn is answered with the service-unavailable "
                      "message and nothing is kept in memory", what, reason)
        if not self.armed:
            log.critical("tracker store failed but Rasa's fail-safe wrapper is not armed: it will fall back to "
                         "memory. Register assistant.rasa.health.HealthInput in credentials.yml.")
        return TrackerStoreUnavailable(f"tracker store {what} failed: {reason}")

    async def _run(self, what: str, fn, *args):
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except Exception as exc:  # noqa: BLE001 - every database error is the same outage to the turn
            raise self._failed(what, exc) from exc

    # -- queries
    def _event_query(self, session, sender_id: str, fetch_events_from_all_sessions: bool):
        """Events of `sender_id` in id order; only those from the latest `session_started` on, unless all
        sessions are asked for. By id (the database's own order), not by timestamp as Rasa does."""
        event = self.SQLEvent
        query = session.query(event).filter(event.sender_id == sender_id)
        if not fetch_events_from_all_sessions:
            start = (session.query(sa.func.max(event.id))
                     .filter(event.sender_id == sender_id, event.type_name == SessionStarted.type_name)
                     .scalar_subquery())
            query = query.filter(sa.or_(start.is_(None), event.id >= start))
        return query.order_by(event.id)

    def _load(self, sender_id: str, all_sessions: bool) -> list:
        with self.session_scope() as session:
            rows = self._event_query(session, sender_id, all_sessions).with_entities(self.SQLEvent.data).all()
            return [json.loads(data) for (data,) in rows]

    def _tracker(self, sender_id: str, events: list) -> DialogueStateTracker:
        tracker = DialogueStateTracker.from_dict(sender_id, events, self.domain.slots)
        setattr(tracker, _PERSISTED, len(tracker.events))
        return tracker

    async def retrieve(self, sender_id: str) -> DialogueStateTracker | None:
        """The latest session; a long one is rolled over (see `_rolled_over`)."""
        events = await self._run("read", self._load, sender_id, False)
        if not events:
            return None
        return self._rolled_over(sender_id, events) or self._tracker(sender_id, events)

    async def retrieve_full_tracker(self, conversation_id: str) -> DialogueStateTracker | None:
        events = await self._run("read", self._load, conversation_id, True)
        return self._tracker(conversation_id, events) if events else None

    async def keys(self) -> Iterable[str]:
        def _keys() -> list:
            with self.session_scope() as session:
                return [s for (s,) in session.query(self.SQLEvent.sender_id).distinct().all()]

        return await self._run("read", _keys)

    def _rolled_over(self, sender_id: str, events: list) -> DialogueStateTracker | None:
        """A new session carrying every slot over, when the stored one holds `max_turns` user messages and
        has not expired (an expired one is left to Rasa, whose session start clears the patient context).

        The tracker starts with the events Rasa's `action_session_start` writes when it carries slots over;
        they are saved with the turn. Returns None when no rollover is due."""
        user_turns = sum(1 for e in events if e.get("event") == UserUttered.type_name)
        if user_turns < self.max_turns or events[-1].get("event") != "action" \
                or events[-1].get("name") != ACTION_LISTEN_NAME:
            return None
        last_user = max((e.get("timestamp") or 0 for e in events if e.get("event") == UserUttered.type_name),
                        default=0)
        config = self.domain.session_config
        if config.are_sessions_enabled() and (time.time() - last_user) / 60 > config.session_expiration_time:
            return None
        old = self._tracker(sender_id, events)
        carried = [SlotSet(name, slot.value) for name, slot in old.slots.items()
                   if slot.value != slot.initial_value]
        tracker = DialogueStateTracker(sender_id, self.domain.slots)
        tracker.update_with_events(
            [ActionExecuted(ACTION_SESSION_START_NAME), SessionStarted(metadata={ROLLOVER: user_turns}),
             *carried, ActionExecuted(ACTION_LISTEN_NAME)], self.domain)
        setattr(tracker, _PERSISTED, 0)
        return tracker

    def _save(self, tracker: DialogueStateTracker) -> int:
        events = list(tracker.events)
        with self.session_scope() as session:
            persisted = getattr(tracker, _PERSISTED, None)
            if persisted is None:  # a tracker this store did not load: Rasa's rule
                persisted = self._event_query(session, tracker.sender_id, False).count()
            for event in events[persisted:]:
                data = event.as_dict()
                session.add(self.SQLEvent(
                    sender_id=tracker.sender_id, type_name=event.type_name, timestamp=data.get("timestamp"),
                    intent_name=(data.get("parse_data") or {}).get("intent", {}).get("name"),
                    action_name=data.get("name"), data=json.dumps(data)))
            session.commit()
        return len(events)

    async def save(self, tracker: DialogueStateTracker) -> None:
        """Append the events not stored yet, in one transaction."""
        await self.stream_events(tracker)
        stored = await self._run("write", self._save, tracker)
        setattr(tracker, _PERSISTED, stored)

    # -- health
    def _ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    async def ping(self, timeout: float = 3.0) -> str | None:
        """None when the database answers within `timeout`, else the reason."""
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(self._executor, self._ping), timeout)
            return None
        except asyncio.TimeoutError:
            return f"no answer from the database within {timeout:g} s"
        except Exception as exc:  # noqa: BLE001
            return " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]

    def close(self) -> None:
        self._executor.shutdown(wait=False)
        self.engine.dispose()


def _reraise(store: GuidelineTrackerStore):
    def on_error(error: Exception) -> None:
        if not isinstance(error, TrackerStoreUnavailable):
            error = store._failed("call", error)
        raise error

    return on_error


def arm_fail_safe(agent: Any) -> bool:
    """Make Rasa's FailSafeTrackerStore around our store re-raise instead of falling back to memory.
    True when the agent's store is ours and is now armed."""
    wrapper = getattr(agent, "tracker_store", None)
    if not isinstance(wrapper, FailSafeTrackerStore):
        return isinstance(wrapper, GuidelineTrackerStore)
    inner = wrapper._tracker_store
    if not isinstance(inner, GuidelineTrackerStore):
        return False
    wrapper._on_tracker_store_error = _reraise(inner)
    inner.armed = True
    return True


def guideline_store(agent: Any) -> GuidelineTrackerStore | None:
    store = getattr(agent, "tracker_store", None)
    store = getattr(store, "_tracker_store", store)
    return store if isinstance(store, GuidelineTrackerStore) else None


# ---------------------------------------------------------------------- lock store
# The lock is Rasa's TicketLock JSON ({"conversation_id": ..., "tickets": ["{\"number\": 0, \"expires\": t}"]})
# so Rasa's own reads (get_lock) keep working; every read-modify-write is one Lua script, which Redis runs
# atomically. Times come from the replica (as in Rasa): keep the replicas' clocks in sync (NTP).
_LUA_COMMON = """
local function load(raw, now)
  local kept = {}
  if raw then
    local lock = cjson.decode(raw)
    for _, t in ipairs(lock['tickets'] or {}) do
      local ticket = cjson.decode(t)
      if tonumber(ticket['expires']) >= now then table.insert(kept, t) end
    end
  end
  return kept
end
local function store(key, conversation_id, tickets, ttl_ms)
  if #tickets == 0 then
    redis.call('DEL', key)
  else
    redis.call('SET', key, cjson.encode({conversation_id = conversation_id, tickets = tickets}), 'PX', ttl_ms)
  end
end
"""
# KEYS[1] lock key; ARGV: conversation id, now, lifetime (s), key ttl (ms). Returns the new ticket number.
_LUA_ISSUE = _LUA_COMMON + """
local now = tonumber(ARGV[2])
local tickets = load(redis.call('GET', KEYS[1]), now)
local number = 0
if #tickets > 0 then number = tonumber(cjson.decode(tickets[#tickets])['number']) + 1 end
table.insert(tickets, cjson.encode({number = number, expires = now + tonumber(ARGV[3])}))
store(KEYS[1], ARGV[1], tickets, tonumber(ARGV[4]))
return number
"""
# ARGV: conversation id, now, ticket to remove (or -1: only drop expired tickets), key ttl (ms).
# Deletes the lock once no ticket is left (Rasa's finish_serving + cleanup, in one step).
_LUA_RELEASE = _LUA_COMMON + """
local now = tonumber(ARGV[2])
local drop = tonumber(ARGV[3])
local kept = {}
for _, t in ipairs(load(redis.call('GET', KEYS[1]), now)) do
  if tonumber(cjson.decode(t)['number']) ~= drop then table.insert(kept, t) end
end
store(KEYS[1], ARGV[1], kept, tonumber(ARGV[4]))
return #kept
"""


class AtomicRedisLockStore(RedisLockStore):
    """Rasa's RedisLockStore with atomic ticket operations and a short poll; see the module docstring."""

    poll_seconds = 0.02

    def __init__(self, settings: service_config.RedisSettings, client: Any) -> None:
        # RedisLockStore.__init__ would build its own client from host/port; ours comes from REDIS_URL.
        self.red = client
        self.settings = settings
        self.key_prefix = "lock:"
        prefix = os.environ.get("CG81_REDIS_KEY_PREFIX")
        if prefix:
            self._set_key_prefix(prefix)
        self._issue = client.register_script(_LUA_ISSUE)
        self._release = client.register_script(_LUA_RELEASE)
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    def _key_ttl_ms(self, lifetime: float) -> int:
        # A lock whose holder died disappears on its own (Rasa's keys never expire).
        return int((lifetime + 60) * 1000)

    def _error(self, what: str, exc: Exception) -> LockError:
        self.last_error, self.last_error_at = f"{what}: {exc}", time.time()
        log.error("Redis lock store %s failed (%s)", what, exc)
        return LockError(f"Redis lock store {what} failed: {exc}")

    def issue_ticket(self, conversation_id: str, lock_lifetime: float = LOCK_LIFETIME) -> int:
        try:
            return int(self._issue(keys=[self.key_prefix + conversation_id],
                                   args=[conversation_id, repr(time.time()), repr(float(lock_lifetime)),
                                         self._key_ttl_ms(lock_lifetime)]))
        except Exception as exc:  # noqa: BLE001 - redis.exceptions.* and OSError alike
            raise self._error("issuing a ticket", exc) from exc

    def _release_ticket(self, conversation_id: str, ticket: int) -> int:
        return int(self._release(keys=[self.key_prefix + conversation_id],
                                 args=[conversation_id, repr(time.time()), ticket, self._key_ttl_ms(LOCK_LIFETIME)]))

    def update_lock(self, conversation_id: str) -> None:
        try:
            self._release_ticket(conversation_id, -1)
        except Exception as exc:  # noqa: BLE001
            raise self._error("updating a lock", exc) from exc

    def finish_serving(self, conversation_id: str, ticket_number: int) -> None:
        self._release_ticket(conversation_id, ticket_number)

    def cleanup(self, conversation_id: str, ticket_number: int) -> None:
        """Remove our ticket and, when no one waits, the lock — atomically. A failure is logged, not
        raised: the turn is already saved, and the ticket expires on its own."""
        try:
            self._release_ticket(conversation_id, ticket_number)
        except Exception as exc:  # noqa: BLE001
            self.last_error, self.last_error_at = f"release: {exc}", time.time()
            log.warning("Redis lock store: could not release the lock of %s (%s); it expires in %d s",
                        conversation_id, exc, LOCK_LIFETIME)

    def get_lock(self, conversation_id: str) -> TicketLock | None:
        try:
            return super().get_lock(conversation_id)
        except Exception as exc:  # noqa: BLE001
            raise self._error("reading a lock", exc) from exc

    @asynccontextmanager
    async def lock(self, conversation_id: str, lock_lifetime: float = LOCK_LIFETIME,
                   wait_time_in_seconds: float = 0) -> AsyncGenerator[TicketLock, None]:
        """Rasa's ticket lock, polled every 20 ms instead of every second."""
        ticket = self.issue_ticket(conversation_id, lock_lifetime)
        try:
            yield await self._acquire_lock(conversation_id, ticket, wait_time_in_seconds or self.poll_seconds)
        finally:
            self.cleanup(conversation_id, ticket)

    def ping(self) -> str | None:
        try:
            self.red.ping()
            return None
        except Exception as exc:  # noqa: BLE001
            return " ".join(str(exc).split())[:300]


class GuidelineLockStore:
    """The lock store named in endpoints.yml: an AtomicRedisLockStore when REDIS_URL is set, else Rasa's
    InMemoryLockStore (one replica only). A class (Rasa loads lock stores by class path) that builds one
    of the two; a wrong or unreachable REDIS_URL stops start-up with one line."""

    def __new__(cls, endpoint_config: Any = None, **_: Any) -> Any:
        try:
            settings = service_config.redis_settings()
            if settings is None:
                log.info("lock store: in-process (REDIS_URL unset: run one Rasa replica only)")
                return InMemoryLockStore()
            client = service_config.connect_redis(settings)
        except ConfigurationError as exc:
            fail_start(exc)
            raise
        log.info("lock store: Redis at %s (atomic tickets)", settings.shown)
        return AtomicRedisLockStore(settings, client)


# ---------------------------------------------------------------------- health
_started = time.time()


async def health(agent: Any) -> tuple:
    """(healthy?, details) for the health endpoint: the model is loaded, the tracker store answers
    `SELECT 1` and Redis answers PING, each within a few seconds."""
    details: dict = {"uptime_s": round(time.time() - _started)}
    problems: List[str] = []
    if agent is None or not agent.is_ready():
        return False, {**details, "reason": "the model is not loaded yet"}
    details["model"] = getattr(agent, "model_name", None)
    store = guideline_store(agent)
    if store is None:
        kind = type(getattr(agent.tracker_store, "_tracker_store", agent.tracker_store)).__name__
        details["tracker_store"] = {"type": kind}
        problems.append(f"tracker store is {kind}, not the configured SQL store")
    else:
        reason = await store.ping()
        details["tracker_store"] = {"type": store.settings.dialect, "url": store.settings.shown,
                                    "ok": reason is None, "fail_safe_armed": store.armed}
        if store.last_error_at:
            details["tracker_store"]["last_error"] = store.last_error
            details["tracker_store"]["last_error_age_s"] = round(time.time() - store.last_error_at, 1)
        if reason:
            problems.append(f"tracker store unreachable: {reason}")
        if not store.armed:
            problems.append("tracker store fail-safe not armed (would fall back to memory)")
        fallback = getattr(agent.tracker_store, "_fallback_tracker_store", None)
        details["tracker_store"]["memory_fallback_used"] = fallback is not None
        if fallback is not None:
            problems.append("Rasa fell back to an in-memory tracker store: conversations are being lost")
    lock_store = agent.lock_store
    if isinstance(lock_store, AtomicRedisLockStore):
        loop = asyncio.get_running_loop()
        try:
            reason = await asyncio.wait_for(loop.run_in_executor(None, lock_store.ping), 3.0)
        except asyncio.TimeoutError:
            reason = "no answer from Redis within 3 s"
        details["lock_store"] = {"type": "redis", "url": lock_store.settings.shown, "ok": reason is None}
        if reason:
            problems.append(f"Redis unreachable: {reason}")
    else:
        details["lock_store"] = {"type": type(lock_store).__name__}
    if problems:
        details["reason"] = "; ".join(problems)
    return not problems, details
