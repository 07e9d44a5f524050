"""The parts both channels share: the turn runner, whole-message collection, de-duplication, task set."""

from __future__ import annotations

import asyncio
import time

import pytest

pytestmark = pytest.mark.rasa
pytest.importorskip("rasa")

from rasa.core.channels.channel import UserMessage  # noqa: E402

from assistant import answer, config  # noqa: E402
from assistant.rasa import channel_common as cc  # noqa: E402


class Agent:
    """Stands in for Rasa's agent.handle_message: sends what a turn would send, or fails the way a turn can."""

    def __init__(self, mode="ok", messages=None) -> None:
        self.mode = mode
        self.messages = messages or [{"text": "hi", "buttons": [{"title": "Help", "payload": "/help"}],
                                      "custom": answer.abstention_payload("no_answer")}]
        self.seen: list = []

    async def __call__(self, message: UserMessage) -> None:
        self.seen.append(message)
        if self.mode == "hang":
            await asyncio.sleep(60)
        if self.mode == "raise":
            raise ConnectionRefusedError("action server down")
        if self.mode == "silent":
            return
        for m in self.messages:
            await message.output_channel.send_response(message.sender_id, {**m, "timestamp": 1.0, "image": None})


def run(coro):
    return asyncio.run(coro)


def test_a_turn_keeps_each_bot_message_whole():
    agent = Agent()
    turn = run(cc.run_turn(agent, "bone mets imaging?", "slack-abc", "slack", metadata={"platform": "slack"}))
    assert turn.status == "ok" and not turn.failed
    assert turn.messages == [{"text": "hi", "buttons": [{"title": "Help", "payload": "/help"}],
                              "custom": answer.abstention_payload("no_answer")}]
    [msg] = agent.seen
    assert (msg.text, msg.sender_id, msg.input_channel, msg.metadata) == \
        ("bone mets imaging?", "slack-abc", "slack", {"platform": "slack"})


def test_text_is_cleaned_like_rest_and_bad_input_never_reaches_rasa():
    agent = Agent()
    run(cc.run_turn(agent, "should I\x07 monitor\x00 with PET-CT?", "s", "slack"))
    assert agent.seen[0].text == "should I monitor with PET-CT?"
    assert run(cc.run_turn(agent, "   ", "s", "slack")).messages == [{"text": answer.EMPTY_MESSAGE}]
    too_long = run(cc.run_turn(agent, "x" * (config.MAX_QUESTION_CHARS + 1), "s", "slack"))
    assert too_long.status == "early" and too_long.messages == [{"text": answer.too_long(config.MAX_QUESTION_CHARS)}]
    assert len(agent.seen) == 1


@pytest.mark.parametrize("mode,status", [("raise", "error"), ("silent", "empty"), ("hang", "timeout")])
def test_failed_empty_or_stalled_turns_become_the_service_unavailable_message(mode, status):
    t0 = time.monotonic()
    turn = run(cc.run_turn(Agent(mode), "bone mets imaging?", "s", "teams", timeout=0.5))
    assert turn.status == status and turn.failed
    assert turn.messages == [{"text": answer.SERVICE_UNAVAILABLE}]
    assert "no recommendation has been given" in answer.SERVICE_UNAVAILABLE
    assert time.monotonic() - t0 < 2.0


def test_turn_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("CG81_CHANNEL_TURN_TIMEOUT", "3.5")
    assert cc.turn_timeout() == 3.5
    monkeypatch.setenv("CG81_CHANNEL_TURN_TIMEOUT", "soon")
    assert cc.turn_timeout() == cc.DEFAULT_TURN_TIMEOUT
    monkeypatch.delenv("CG81_CHANNEL_TURN_TIMEOUT")
    assert cc.turn_timeout() == cc.DEFAULT_TURN_TIMEOUT <= 8.0


def test_conversation_ids_are_stable_distinct_and_opaque():
    a = cc.conversation_id("slack", "T1", "C1", "1700000000.000100")
    assert a == cc.conversation_id("slack", "T1", "C1", "1700000000.000100")
    assert a != cc.conversation_id("slack", "T1", "C1", "1700000000.000200")
    assert a != cc.conversation_id("slack", "T1", "C1" "1700000000.000100")   # parts are delimited
    assert a.startswith("slack-") and "C1" not in a and len(a) == len("slack-") + 32


def test_memory_dedup_claims_once_and_forgets_after_the_ttl():
    async def scenario():
        store = cc.MemoryDedup(ttl=0.3, max_entries=3, pending_ttl=0.3)
        assert await store.claim("a") and not await store.claim("a")
        await store.confirm("a")
        await asyncio.sleep(0.35)
        assert await store.claim("a")
        for key in "bcd":
            assert await store.claim(key)
        assert len(store._seen) <= 3
    run(scenario())


def test_a_claim_not_confirmed_lapses_so_a_retry_after_a_crash_is_answered():
    async def scenario():
        store = cc.MemoryDedup(ttl=60, pending_ttl=0.2)
        assert await store.claim("crashed") and await store.claim("answered")
        await store.confirm("answered")
        await asyncio.sleep(0.25)
        assert await store.claim("crashed")          # the replica died mid-turn: the retry gets an answer
        assert not await store.claim("answered")     # answered: the retry is a duplicate for the whole TTL
    run(scenario())


def test_deduplicator_is_all_or_nothing_over_its_keys():
    async def scenario():
        dedup = cc.Deduplicator()
        assert await dedup.claim("event:1", "msg:C1:1")
        await dedup.confirm("event:1", "msg:C1:1")
        assert not await dedup.claim("event:1", "msg:C1:1")     # the retry
        assert not await dedup.claim("event:2", "msg:C1:1")     # same message, other event (im + mention)
        assert dedup.store.backend == "memory"
    run(scenario())


def test_a_redis_lock_store_selects_redis_on_the_same_server():
    from rasa.core.lock_store import InMemoryLockStore, RedisLockStore

    class App:
        class ctx:
            agent = None

    App.ctx.agent = type("A", (), {"lock_store": RedisLockStore(host="10.9.8.7", port=6390, db=3,
                                                                 key_prefix="trust1")})()
    store = cc.make_dedup(App)
    assert store.backend == "redis" and store.prefix == "trust1:"
    kwargs = store.client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("10.9.8.7", 6390, 3)
    class AtomicRedisLockStore(RedisLockStore):   # the shape of the service's own (a subclass)
        pass

    App.ctx.agent = type("A", (), {"lock_store": AtomicRedisLockStore(host="10.9.8.6", port=6391)})()
    assert cc.make_dedup(App).backend == "redis"
    App.ctx.agent = type("A", (), {"lock_store": InMemoryLockStore()})()
    assert cc.make_dedup(App).backend == "memory"


def test_redis_failure_falls_back_to_memory_rather_than_dropping():
    import redis.asyncio as aioredis

    async def scenario():
        store = cc.RedisDedup(aioredis.Redis(host="127.0.0.1", port=1, socket_timeout=0.5,
                                             socket_connect_timeout=0.5))
        assert await store.claim("k") is True
        assert await store.claim("k") is False
        await store.close()
    run(scenario())


def test_task_set_keeps_references_and_drains():
    async def scenario():
        tasks = cc.TaskSet()
        done = []

        async def work():
            await asyncio.sleep(0.05)
            done.append(1)

        async def boom():
            raise ValueError("x")

        tasks.spawn(work())
        tasks.spawn(boom())
        assert len(tasks.tasks) == 2
        await tasks.drain(timeout=1)
        assert done == [1] and not tasks.tasks
    run(scenario())
