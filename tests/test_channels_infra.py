"""What the channels need around them: Redis de-duplication across replicas (a real redis-server), the Teams
app manifest and Adaptive Cards against Microsoft's official JSON schemas, and the Slack app manifests.

`make test-channels` fetches the schemas and installs redis-server first and sets CG81_CHANNELS_STRICT=1, so
anything missing there is a failure; run elsewhere, the tests that lack it skip and say why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.channels
pytest.importorskip("rasa")

import yaml  # noqa: E402
from fakes.harness import ScriptedAgent, ServerUnderTest, http  # noqa: E402
from fakes.loop import LoopThread, free_port  # noqa: E402
from fakes.slack import FakeSlack, event_envelope, mention, sign  # noqa: E402

from assistant import answer, config  # noqa: E402
from assistant.rasa import render_teams  # noqa: E402
from assistant.rasa.channel_common import Deduplicator, make_dedup  # noqa: E402
from assistant.rasa.slack import SlackConfig, SlackInput  # noqa: E402

ROOT = config.ROOT
SCHEMAS = ROOT / "build" / "schemas"
STRICT = os.environ.get("CG81_CHANNELS_STRICT") == "1"


def need(condition: bool, why: str) -> None:
    if not condition:
        if STRICT:
            pytest.fail(why)
        pytest.skip(why)


def load_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------- Redis across replicas
@pytest.fixture(scope="module")
def redis_port(tmp_path_factory):
    binary = shutil.which("redis-server")
    need(binary is not None, "redis-server is not installed (make test-channels installs it)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


def agent_with_redis_lock_store(port: int) -> ScriptedAgent:
    from rasa.core.lock_store import RedisLockStore

    agent = ScriptedAgent()
    agent.lock_store = RedisLockStore(host="127.0.0.1", port=port, db=1, key_prefix=f"t{uuid.uuid4().hex[:8]}")
    return agent


def test_two_replicas_share_the_redis_dedup_store(redis_port):
    import asyncio

    class App:
        def __init__(self, agent) -> None:
            self.ctx = type("ctx", (), {"agent": agent})()

    lock_agent = agent_with_redis_lock_store(redis_port)

    async def scenario():
        replica_a, replica_b = Deduplicator(), Deduplicator()
        replica_a.attach(App(lock_agent))
        replica_b.attach(App(lock_agent))
        assert replica_a.store.backend == replica_b.store.backend == "redis"
        assert await replica_a.claim("slack:event:Ev1", "slack:msg:T1:C1:1.0")
        assert not await replica_b.claim("slack:event:Ev1", "slack:msg:T1:C1:1.0")   # while it is answered
        await replica_a.confirm("slack:event:Ev1", "slack:msg:T1:C1:1.0")
        assert not await replica_b.claim("slack:event:Ev1", "slack:msg:T1:C1:1.0")   # and after
        assert not await replica_b.claim("slack:event:Ev2", "slack:msg:T1:C1:1.0")
        assert await replica_b.claim("slack:event:Ev3", "slack:msg:T1:C1:2.0")
        await replica_a.close()
        await replica_b.close()
    asyncio.run(scenario())
    import redis

    keys = redis.Redis(port=redis_port, db=1).keys(f"{lock_agent.lock_store.key_prefix[:-5]}cg81:dedup:*")
    assert len(keys) == 5      # Ev1, Ev2 (a duplicate of Ev1's message), Ev3 and the two messages
    ttls = {k.decode().split("dedup:", 1)[1]: redis.Redis(port=redis_port, db=1).ttl(k) for k in keys}
    assert ttls["slack:event:Ev1"] > 3000 and ttls["slack:msg:T1:C1:1.0"] > 3000     # answered: an hour
    assert 0 < ttls["slack:event:Ev3"] <= 30                                          # in progress: 30 s


def test_a_slack_retry_delivered_to_another_replica_is_not_answered_again(redis_port):
    """Two Rasa replicas behind one Slack app (same Redis lock store): the retry lands on the other one."""
    loop = LoopThread()
    fake = loop.run(FakeSlack(f"xoxb-{uuid.uuid4().hex}", "xapp-unused").start())
    secret = uuid.uuid4().hex
    agent_a = agent_with_redis_lock_store(redis_port)
    agent_b = ScriptedAgent()
    agent_b.lock_store = agent_a.lock_store
    cfg = SlackConfig(bot_token=fake.bot_token, signing_secret=secret, api_url=fake.api_url)
    replicas = [loop.run(ServerUnderTest([SlackInput(cfg)], agent, free_port()).start())
                for agent in (agent_a, agent_b)]
    try:
        channel = f"C{uuid.uuid4().hex[:8].upper()}"
        envelope = event_envelope(mention("should I monitor with PET-CT?", "U1", channel))
        body = json.dumps(envelope).encode()
        outcomes = []
        for n, server in enumerate(replicas):
            headers = {"Content-Type": "application/json", **sign(secret, body)}
            if n:
                headers["X-Slack-Retry-Num"] = "1"
            outcomes.append(http("POST", f"{server.base}/webhooks/slack/webhook", body, headers)[1]["handled"])
        assert outcomes == ["accepted", "duplicate"]
        assert fake.posts.wait(lambda p: p["body"]["channel"] == channel, 10)
        time.sleep(0.4)
        assert len(fake.posts.matching(lambda p: p["body"]["channel"] == channel)) == 1
    finally:
        for server in replicas:
            loop.run(server.stop())
        loop.run(fake.stop())
        loop.stop()


def test_the_service_lock_store_with_redis_url_brings_redis_dedup(redis_port, monkeypatch):
    """endpoints.yml names the service's GuidelineLockStore; with REDIS_URL set it is a RedisLockStore
    subclass on that server, and the channels' de-duplication follows it there."""
    stores = pytest.importorskip("assistant.rasa.stores")
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{redis_port}/2")
    try:
        lock_store = stores.GuidelineLockStore()
    except Exception as exc:  # noqa: BLE001 - the service's module is not this suite's subject
        pytest.skip(f"the service lock store could not be built here: {exc}")

    class App:
        ctx = type("ctx", (), {"agent": type("agent", (), {"lock_store": lock_store})()})()

    store = make_dedup(App)
    assert store.backend == "redis"
    kwargs = store.client.connection_pool.connection_kwargs
    assert (kwargs["host"], int(kwargs["port"]), int(kwargs["db"])) == ("127.0.0.1", redis_port, 2)


def test_without_a_redis_lock_store_dedup_stays_in_memory():
    assert make_dedup(None).backend == "memory"


# ---------------------------------------------------------------------- Teams manifest and Adaptive Cards
@pytest.fixture(scope="module")
def teams_package():
    need((SCHEMAS / "teams").is_dir(), "the Teams manifest schemas are not fetched (make channel-schemas)")
    return load_script("teams_package")


def test_the_committed_manifest_is_valid_against_the_official_schema(teams_package):
    manifest = teams_package.load_manifest({})
    assert teams_package.validate(manifest, SCHEMAS) == []
    assert teams_package.schema_path(manifest, SCHEMAS).exists()
    assert manifest["$schema"].endswith(f"/v{manifest['manifestVersion']}/MicrosoftTeams.schema.json")
    numbered = sorted((p.name for p in (SCHEMAS / "teams").iterdir() if p.name[1:].replace(".", "").isdigit()),
                      key=lambda v: tuple(int(x) for x in v[1:].split(".")))
    assert f"v{manifest['manifestVersion']}" == numbered[-1], "use the newest manifest schema the package ships"
    bot = manifest["bots"][0]
    assert set(bot["scopes"]) == {"personal", "team", "groupChat"}
    assert bot["isNotificationOnly"] is False and bot["supportsFiles"] is False
    assert teams_package.check_icons() == []


def test_the_manifest_takes_the_deployment_ids_and_the_validator_catches_mistakes(teams_package):
    app_id = str(uuid.uuid4())
    manifest = teams_package.load_manifest({"MICROSOFT_APP_ID": app_id, "TEAMS_WEBSITE_URL": "https://trust.nhs.uk"})
    assert manifest["id"] == manifest["bots"][0]["botId"] == app_id
    assert manifest["developer"]["websiteUrl"] == "https://trust.nhs.uk"
    assert teams_package.validate(manifest, SCHEMAS) == []
    broken = json.loads(json.dumps(manifest))
    broken["bots"][0]["botId"] = "not-a-guid"
    del broken["developer"]["privacyUrl"]
    broken["accentColor"] = "blue"
    problems = teams_package.validate(broken, SCHEMAS)
    assert any(p.startswith("bots/0/botId") for p in problems)
    assert any("privacyUrl" in p for p in problems)
    assert any(p.startswith("accentColor") for p in problems)


def test_the_package_zip_holds_the_manifest_and_icons(teams_package, tmp_path):
    manifest = teams_package.load_manifest({"MICROSOFT_APP_ID": str(uuid.uuid4())})
    out = teams_package.build_zip(manifest, tmp_path / "app.zip")
    with zipfile.ZipFile(out) as z:
        assert sorted(z.namelist()) == ["color.png", "manifest.json", "outline.png"]
        assert json.loads(z.read("manifest.json")) == manifest
    assert teams_package.main(["--schemas", str(SCHEMAS), "--out", str(tmp_path / "cli.zip")]) == 0
    assert (tmp_path / "cli.zip").exists()


@pytest.fixture(scope="module")
def card_schema():
    path = SCHEMAS / "adaptive-card.json"
    need(path.exists(), "the Adaptive Card schema is not fetched (make channel-schemas)")
    import jsonschema

    schema = json.loads(path.read_text(encoding="utf-8"))
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    return schema, validator_cls(schema)


def card_messages(corpus_by_id) -> dict:
    items = [answer.answer_item(corpus_by_id[i], 0.8) for i in ("1.3.4", "1.3.5", "1.3.7")]
    clar = {"question": "Is this a postmenopausal woman, a premenopausal or perimenopausal woman, or a man?",
            "options": ["Postmenopausal woman", "Premenopausal or perimenopausal woman", "Man"]}
    listing = [corpus_by_id[i] for i in ("1.5.18", "1.5.19", "1.5.20", "1.5.21")]
    return {
        "answer": {"text": answer.answer_text(items), "custom": answer.payload(items)},
        "clarification": {"text": answer.clarification_text(clar, items),
                          "buttons": [{"title": o, "payload": o} for o in clar["options"]],
                          "custom": answer.payload(items, clarification=clar)},
        "listing": {"text": answer.list_text(listing),
                    "custom": answer.payload([answer.answer_item(r, None) for r in listing])},
        "abstention": {"text": answer.abstention_text("out_of_scope:oos_dosing"),
                       "custom": answer.abstention_payload("out_of_scope:oos_dosing")},
        "buttons": {"text": "Hello! How can I help?", "buttons": [{"title": "Help", "payload": "/help"}]},
    }


def version_tuple(v: str) -> tuple:
    return tuple(int(x) for x in v.split("."))


def test_adaptive_cards_are_valid_and_use_nothing_newer_than_their_version(card_schema, corpus_by_id):
    schema, validator = card_schema
    defs = schema["definitions"]
    for name, message in card_messages(corpus_by_id).items():
        act = render_teams.render_message(message, selected="Help" if name == "buttons" else None)
        content = act["attachments"][0]["content"]
        errors = [e.message for e in validator.iter_errors(content)]
        assert errors == [], f"{name}: {errors[:3]}"
        # Every element and property used exists in the card's declared version (Teams renders 1.4).
        stack = [content]
        while stack:
            node = stack.pop()
            if isinstance(node, list):
                stack.extend(node)
                continue
            if not isinstance(node, dict):
                continue
            kind = node.get("type")
            if kind in defs:
                assert version_tuple(defs[kind].get("version", "1.0")) <= version_tuple(render_teams.CARD_VERSION), kind
                props = defs[kind].get("properties", {})
                for prop in node:
                    if prop in props and "version" in props[prop]:
                        assert version_tuple(props[prop]["version"]) <= version_tuple(render_teams.CARD_VERSION), \
                            f"{kind}.{prop}"
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))


def test_the_schema_rejects_what_teams_would_reject(card_schema):
    _, validator = card_schema
    bad = {"type": "AdaptiveCard", "version": "1.4", "body": [{"type": "RichTextBlock", "inlines": [
        {"type": "TextRun", "text": "x", "weight": "Heaviest"}]}]}
    assert list(validator.iter_errors(bad))
    bad = {"type": "AdaptiveCard", "version": "1.4", "actions": [{"type": "Action.OpenUrl", "title": "NICE"}]}
    assert list(validator.iter_errors(bad))


# ---------------------------------------------------------------------- Slack app manifests
@pytest.mark.parametrize("name,socket_mode", [("manifest.yml", False), ("manifest.socket-mode.yml", True)])
def test_slack_manifests_ask_for_what_the_connector_uses(name, socket_mode):
    manifest = yaml.safe_load((ROOT / "slack" / name).read_text(encoding="utf-8"))
    settings = manifest["settings"]
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == {"app_mentions:read", "chat:write", "im:history"}
    assert set(settings["event_subscriptions"]["bot_events"]) == {"app_mention", "message.im"}
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["socket_mode_enabled"] is socket_mode
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True
    assert manifest["features"]["bot_user"]["display_name"]
    assert len(manifest["display_information"]["description"]) <= 139
    if socket_mode:
        assert "request_url" not in settings["event_subscriptions"]
        assert "request_url" not in settings["interactivity"]
    else:
        for url in (settings["event_subscriptions"]["request_url"], settings["interactivity"]["request_url"]):
            assert url.startswith("https://") and url.endswith("/webhooks/slack/webhook")


def test_credentials_register_both_channels_beside_rest():
    creds = yaml.safe_load((ROOT / "credentials.yml").read_text(encoding="utf-8"))
    assert {"assistant.rasa.channel.GuidelineRestInput", "assistant.rasa.slack.SlackInput",
            "assistant.rasa.teams.TeamsInput"} <= set(creds)
    text = (ROOT / "credentials.yml").read_text(encoding="utf-8")
    assert "xoxb-" not in text and "xapp-" not in text   # secrets come from the environment only


def test_no_secret_is_committed_with_the_channels():
    tracked = subprocess.run(["git", "ls-files", "slack", "teams", "credentials.yml", "mk/channels.mk"], cwd=ROOT,
                             capture_output=True, text=True).stdout.split()
    for rel in tracked or ["slack/manifest.yml", "teams/manifest.json", "credentials.yml"]:
        path = Path(ROOT / rel)
        if path.suffix == ".png":
            continue
        text = path.read_text(encoding="utf-8")
        assert "xoxb-" not in text and "xapp-" not in text and "BEGIN RSA" not in text and "client_secret" not in text
