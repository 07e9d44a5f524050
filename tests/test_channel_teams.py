"""Teams connector: our channel on a real HTTP server, against a fake Microsoft (OpenID metadata, JWKS from an
RSA key made here, token endpoint, Bot Connector) served over real HTTP on 127.0.0.1.

Covers what Rasa's own Bot Framework tests cover (a valid token, keys refreshed daily, a token not yet
valid, a missing or non-Bearer header, a garbage token) and what this issue adds: issuer, audience, expiry,
unknown key, `alg: none`, HS256, service URL and endorsement checks; metadata that is unreachable or hangs;
the outbound token cached and renewed; identity per chat, person and thread; card clicks; retries.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

import pytest

pytestmark = pytest.mark.rasa
pytest.importorskip("rasa")
pytest.importorskip("jwt")

from fakes.harness import ScriptedAgent, ServerUnderTest, http  # noqa: E402
from fakes.loop import LoopThread, free_port  # noqa: E402
from fakes.microsoft import FakeMicrosoft, activity, new_key  # noqa: E402

from assistant import answer  # noqa: E402
from assistant.rasa.teams import AppToken, HttpClient, OpenIdKeys, TeamsConfig, TeamsInput  # noqa: E402

APP_ID = str(uuid.uuid4())
TENANT = str(uuid.uuid4())
PASSWORD = uuid.uuid4().hex


def config_for(fake: FakeMicrosoft, **overrides) -> TeamsConfig:
    env = {"MICROSOFT_APP_ID": APP_ID, "MICROSOFT_APP_PASSWORD": PASSWORD, "MICROSOFT_APP_TENANT_ID": TENANT,
           "BOTFRAMEWORK_OPENID_METADATA_URL": fake.openid_url, "MICROSOFT_LOGIN_URL": fake.login_url}
    cfg = TeamsConfig.from_env(env)
    cfg.turn_timeout = 1.5
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


@pytest.fixture(scope="module")
def env():
    loop = LoopThread()
    fake = loop.run(FakeMicrosoft(APP_ID, PASSWORD, TENANT).start())
    agent = ScriptedAgent()
    channel = TeamsInput(config_for(fake))
    server = loop.run(ServerUnderTest([channel], agent, free_port()).start())
    deadline = time.monotonic() + 20
    while not channel.bridge.keys.keys and time.monotonic() < deadline:   # keys are prefetched at start
        time.sleep(0.05)
    yield {"loop": loop, "fake": fake, "agent": agent, "server": server, "channel": channel,
           "url": f"{server.base}/webhooks/teams/webhook"}
    loop.run(server.stop())
    loop.run(fake.stop())
    loop.stop()


@pytest.fixture(autouse=True)
def reset(env):
    env["agent"].mode, env["agent"].delay = "ok", 0.0
    env["fake"].available, env["fake"].stall = True, False
    yield


def make(env, text: str, **kw) -> dict:
    return activity(text, service_url=env["fake"].service_url, app_id=APP_ID, tenant=TENANT, **kw)


def post(env, act, token: str | None = None, raw: bytes | None = None, headers: dict | None = None,
         url: str | None = None) -> tuple:
    body = raw if raw is not None else json.dumps(act).encode()
    auth = {} if token == "" else {"Authorization": f"Bearer {token or env['fake'].channel_token()}"}
    return http("POST", url or env["url"], body, {"Content-Type": "application/json", **auth, **(headers or {})})


def replies(env, conversation: str, n: int = 1, kind: str = "message", timeout: float = 15.0) -> list:
    found = env["fake"].replies.wait_count(
        lambda r: r["conversation"] == conversation and r["body"]["type"] == kind, n, timeout)
    assert len(found) >= n, f"expected {n} {kind} activities in {conversation}, got {len(found)}"
    return found


def none_to(env, conversation: str, wait: float = 0.4) -> bool:
    time.sleep(wait)
    return not env["fake"].replies.matching(lambda r: r["conversation"] == conversation)


def card(reply: dict) -> dict:
    return reply["body"]["attachments"][0]["content"]


def walk(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def first_id(reply: dict) -> str | None:
    boxes = [n for n in card(reply)["body"] if n.get("type") == "Container" and len(n.get("items", [])) > 2]
    return boxes[0]["items"][0]["inlines"][0]["text"].split()[0] if boxes else None


def card_runs(reply: dict) -> str:
    return "\n".join(n["text"] for n in walk(card(reply)) if n.get("type") == "TextRun")


# ---------------------------------------------------------------------- a valid activity
def test_a_signed_activity_is_answered_with_an_adaptive_card(env, corpus_by_id):
    act = make(env, "should I monitor with PET-CT?")
    status, body, _ = post(env, act)
    assert (status, body["handled"]) == (200, "accepted")
    [reply] = replies(env, act["conversation"]["id"])
    assert reply["reply_to"] == act["id"]
    sent = reply["body"]
    assert sent["from"] == {"id": f"28:{APP_ID}", "name": "CG81 Assistant"}
    assert sent["recipient"]["id"] == act["from"]["id"]
    assert sent["conversation"] == {"id": act["conversation"]["id"]} and sent["replyToId"] == act["id"]
    assert first_id(reply) == "1.1.8" and corpus_by_id["1.1.8"]["text"] in card_runs(reply)
    assert [n["url"] for n in walk(card(reply)) if n.get("type") == "Action.OpenUrl"] == [
        "https://www.nice.org.uk/guidance/cg81/chapter/Recommendations#monitoring-disease-status"]
    seen = env["agent"].received[-1]
    assert seen["channel"] == "teams" and seen["metadata"] == {"platform": "teams", "conversation": "personal"}


def test_a_typing_indicator_is_sent_while_the_turn_runs(env):
    env["agent"].delay = 1.0
    act = make(env, "should I monitor with PET-CT?")
    post(env, act)
    conv = act["conversation"]["id"]
    [message] = replies(env, conv)
    typing = env["fake"].replies.matching(lambda r: r["conversation"] == conv and r["body"]["type"] == "typing")
    assert typing and typing[0]["t"] < message["t"] - 0.5


def test_the_outbound_token_is_cached(env):
    before = len(env["fake"].token_requests.items)
    for _ in range(3):
        act = make(env, "should I monitor with PET-CT?")
        post(env, act)
        replies(env, act["conversation"]["id"])
    assert len(env["fake"].token_requests.items) - before <= 1      # at most one fetch for three replies
    assert env["fake"].token_requests.items[-1]["tenant"] == TENANT
    assert env["fake"].token_requests.items[-1]["form"]["scope"] == "https://api.botframework.com/.default"


def test_conversation_ids_are_url_encoded_in_the_reply_path(env):
    thread = f"19:{uuid.uuid4().hex}@thread.tacv2;messageid=1700000000001"
    act = make(env, "should I monitor with PET-CT?", scope="channel", conversation=thread, mention_bot=True)
    post(env, act)
    [reply] = replies(env, thread)
    assert "%3Bmessageid%3D" in reply["raw_conversation"] and "%40thread.tacv2" in reply["raw_conversation"]


# ---------------------------------------------------------------------- inbound authentication
@pytest.mark.parametrize("case", ["wrong issuer", "wrong audience", "expired", "not yet valid", "unknown kid",
                                  "alg none", "HS256", "other key", "no exp", "no aud"])
def test_bad_tokens_are_refused_with_401(env, case):
    fake = env["fake"]
    tokens = {"wrong issuer": lambda: fake.channel_token(iss="https://sts.windows.net/evil/"),
              "wrong audience": lambda: fake.channel_token(aud=str(uuid.uuid4())),
              "expired": lambda: fake.channel_token(exp=int(time.time()) - 301, nbf=int(time.time()) - 3600),
              "not yet valid": lambda: fake.channel_token(nbf=int(time.time()) + 86400,
                                                          exp=int(time.time()) + 2 * 86400),
              "unknown kid": lambda: fake.channel_token(kid="rotated-away"),
              "alg none": lambda: fake.channel_token(alg="none"),
              "HS256": lambda: fake.channel_token(alg="HS256"),
              "other key": lambda: fake.channel_token(key=new_key()),
              "no exp": lambda: fake.channel_token(exp=None),
              "no aud": lambda: fake.channel_token(aud=None)}
    act = make(env, "should I monitor with PET-CT?")
    status, body, _ = post(env, act, token=tokens[case]())
    assert status == 401 and "JWT" in body["error"]
    assert none_to(env, act["conversation"]["id"], wait=0.2)


def test_clock_skew_of_up_to_five_minutes_is_tolerated(env):
    now = int(time.time())
    act = make(env, "should I monitor with PET-CT?")
    assert post(env, act, token=env["fake"].channel_token(exp=now - 240, nbf=now - 3600))[0] == 200
    act = make(env, "should I monitor with PET-CT?")
    assert post(env, act, token=env["fake"].channel_token(nbf=now + 240))[0] == 200


def test_a_token_for_another_service_url_is_refused(env):
    act = make(env, "should I monitor with PET-CT?")
    token = env["fake"].channel_token(service_url="https://smba.trafficmanager.net/emea/")
    status, body, _ = post(env, act, token=token)
    assert status == 401 and "serviceurl" in body["error"]
    forged = dict(act, serviceUrl="http://127.0.0.1:9/steal/")       # a valid token, a changed serviceUrl
    assert post(env, forged)[0] == 401


def test_a_key_not_endorsed_for_the_channel_is_refused(env):
    act = make(env, "should I monitor with PET-CT?", channelId="skype")
    status, body, _ = post(env, act)
    assert status == 401 and "endorsed" in body["error"]


@pytest.mark.parametrize("header,message", [
    (None, "No authorization header provided."),
    ("Basic dXNlcm5hbWU6cGFzc3dvcmQ=", "No Bearer token provided in Authorization header."),
    ("Bearer invalid", "Could not validate JWT token."),
    ("Bearer ", "No Bearer token provided in Authorization header."),
])
def test_missing_or_malformed_authorization_headers(env, header, message):
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Authorization"] = header
    status, body, _ = http("POST", env["url"], json.dumps(make(env, "hi")).encode(), headers)
    assert (status, body["error"]) == (401, message)


def test_a_new_signing_key_is_picked_up_by_refreshing(env):
    fake, keys = env["fake"], env["channel"].bridge.keys
    rotated, kid = new_key(), f"rotated-{uuid.uuid4().hex[:6]}"
    fake.extra_keys.append((rotated, kid, ["msteams"]))
    try:
        act = make(env, "should I monitor with PET-CT?")
        # Within the cool-down an unknown key ID does not make every request refetch the keys.
        fetches = fake.jwks_fetches
        assert post(env, act, token=fake.channel_token(key=rotated, kid=kid))[0] == 401
        assert fake.jwks_fetches == fetches
        keys.cooldown = 0
        assert post(env, act, token=fake.channel_token(key=rotated, kid=kid))[0] == 200
        assert fake.jwks_fetches == fetches + 1
    finally:
        keys.cooldown = 300
        fake.extra_keys.clear()


def test_keys_are_refetched_after_a_day(env):
    async def scenario():
        fake = env["fake"]
        http_client = HttpClient(2.0)
        keys = OpenIdKeys(fake.openid_url, http_client, max_age=0.3)
        start = fake.metadata_fetches
        assert await keys.get(fake.kid) is not None
        assert await keys.get(fake.kid) is not None
        assert fake.metadata_fetches == start + 1
        await asyncio.sleep(0.35)                    # "a day" later
        assert await keys.get(fake.kid) is not None
        assert fake.metadata_fetches == start + 2
        await http_client.close()
    env["loop"].run(scenario())


def test_server_starts_without_metadata_and_recovers_later(env):
    """Metadata down at start-up: the server starts, says 503 (not 401) until keys arrive, then works."""
    loop, fake = env["loop"], env["fake"]
    fake.available = False
    channel = TeamsInput(config_for(fake))
    server = loop.run(ServerUnderTest([channel], ScriptedAgent(), free_port()).start())
    try:
        channel.bridge.keys.retry_after = 0.3
        assert http("GET", f"{server.base}/webhooks/teams/")[1] == {"status": "ok", "signing_keys": 0}
        act = make(env, "should I monitor with PET-CT?")
        url = f"{server.base}/webhooks/teams/webhook"
        status, body, _ = post(env, act, url=url)
        assert status == 503 and "signing keys" in body["error"]
        fake.available = True
        time.sleep(0.35)
        assert post(env, act, url=url)[0] == 200
        replies(env, act["conversation"]["id"])
    finally:
        loop.run(server.stop())


def test_a_hanging_metadata_endpoint_times_out_without_blocking_the_server(env):
    loop, fake = env["loop"], env["fake"]
    fake.stall = True
    channel = TeamsInput(config_for(fake, http_timeout=1.0))
    server = loop.run(ServerUnderTest([channel], ScriptedAgent(), free_port()).start())
    try:
        t0 = time.monotonic()
        assert http("GET", f"{server.base}/webhooks/teams/", timeout=5)[0] == 200    # served meanwhile
        assert time.monotonic() - t0 < 1.0
        status, _, _ = post(env, make(env, "hi"), url=f"{server.base}/webhooks/teams/webhook")
        assert status == 503 and time.monotonic() - t0 < 4
    finally:
        fake.stall = False
        loop.run(server.stop())


# ---------------------------------------------------------------------- outbound token
def test_the_outbound_token_is_renewed_before_it_expires_and_after_a_401(env):
    async def scenario():
        fake = env["fake"]
        fake.token_lifetime = 2              # renewed at half its life for short-lived tokens
        http_client = HttpClient(2.0)
        token = AppToken(config_for(fake), http_client)
        try:
            first = await token.get()
            assert await token.get() == first and token.fetches == 1
            await asyncio.sleep(1.1)
            second = await token.get()
            assert second != first and token.fetches == 2
            token.invalidate()
            assert await token.get() != second and token.fetches == 3
        finally:
            fake.token_lifetime = 3600
            await http_client.close()
    env["loop"].run(scenario())


def test_a_revoked_outbound_token_is_replaced_and_the_reply_still_arrives(env):
    env["fake"].issued.clear()             # every token we hold is now refused by the connector
    act = make(env, "should I monitor with PET-CT?")
    post(env, act)
    assert first_id(replies(env, act["conversation"]["id"])[0]) == "1.1.8"


def test_multi_tenant_bots_get_their_token_from_the_botframework_tenant(env):
    async def scenario():
        http_client = HttpClient(2.0)
        cfg = TeamsConfig.from_env({"MICROSOFT_APP_ID": APP_ID, "MICROSOFT_APP_PASSWORD": PASSWORD,
                                    "MICROSOFT_APP_TYPE": "MultiTenant",
                                    "MICROSOFT_LOGIN_URL": env["fake"].login_url})
        assert cfg.enabled and cfg.token_url.endswith("/botframework.com/oauth2/v2.0/token")
        await AppToken(cfg, http_client).get()
        await http_client.close()
    env["loop"].run(scenario())
    assert env["fake"].token_requests.items[-1]["tenant"] == "botframework.com"


# ---------------------------------------------------------------------- scopes, mentions, identity
def test_group_chat_needs_a_mention_which_is_stripped(env):
    conv = f"19:{uuid.uuid4().hex}@thread.v2"
    plain = make(env, "should I monitor with PET-CT?", scope="groupChat", conversation=conv)
    assert post(env, plain)[1] == {"ok": True, "handled": "ignored", "reason": "not mentioned"}
    addressed = make(env, "should I monitor with PET-CT?", scope="groupChat", conversation=conv, mention_bot=True)
    assert addressed["text"].startswith("<at>CG81 Assistant</at>")
    assert post(env, addressed)[1]["handled"] == "accepted"
    replies(env, conv)
    assert env["agent"].received[-1]["text"] == "should I monitor with PET-CT?"


def test_other_peoples_mentions_are_removed_too(env):
    act = make(env, "ask <at>Dr Smith</at> about PET-CT", scope="channel", mention_bot=True)
    act["entities"].append({"type": "mention", "text": "<at>Dr Smith</at>", "mentioned": {"id": "29:smith"}})
    post(env, act)
    replies(env, act["conversation"]["id"])
    assert env["agent"].received[-1]["text"] == "ask about PET-CT"


def test_a_follow_up_in_a_channel_thread_keeps_context_and_another_thread_does_not(env):
    channel_id = f"19:{uuid.uuid4().hex}@thread.tacv2"
    root = "1700000000100"
    thread = f"{channel_id};messageid={root}"
    first = make(env, "first line endocrine therapy for a postmenopausal woman", scope="channel",
                 conversation=thread, activity_id=root, mention_bot=True)
    post(env, first)
    replies(env, thread, 1)
    follow = make(env, "and for men?", scope="channel", conversation=thread, user="29:user-b", mention_bot=True)
    post(env, follow)
    assert [first_id(r) for r in replies(env, thread, 2)] == ["1.3.4", "1.3.7"]
    other = f"{channel_id};messageid=1700000000200"
    post(env, make(env, "and for men?", scope="channel", conversation=other, mention_bot=True))
    assert first_id(replies(env, other)[0]) is None


def test_two_people_in_a_group_chat_never_share_a_conversation(env):
    conv = f"19:{uuid.uuid4().hex}@thread.v2"
    post(env, make(env, "first line endocrine therapy for a postmenopausal woman", scope="groupChat",
                   conversation=conv, user="29:user-a", mention_bot=True))
    replies(env, conv, 1)
    post(env, make(env, "and for men?", scope="groupChat", conversation=conv, user="29:user-b", mention_bot=True))
    second = replies(env, conv, 2)[1]
    assert first_id(second) is None
    post(env, make(env, "and for men?", scope="groupChat", conversation=conv, user="29:user-a", mention_bot=True))
    assert first_id(replies(env, conv, 3)[2]) == "1.3.7"


def test_a_card_button_click_continues_the_conversation(env):
    conv = f"a:1{uuid.uuid4().hex}"
    post(env, make(env, "which endocrine therapy for ER positive advanced breast cancer?", conversation=conv))
    [clarify] = replies(env, conv, 1)
    submit = next(n for n in walk(card(clarify)) if n.get("type") == "Action.Submit"
                  and n["title"] == "Postmenopausal woman")
    click = make(env, "", conversation=conv, value=submit["data"])
    assert post(env, click)[1]["handled"] == "accepted"
    answered = replies(env, conv, 2)[1]
    assert first_id(answered) == "1.3.4"
    assert card(answered)["body"][0]["inlines"][0]["text"] == "Selected: Postmenopausal woman"
    assert env["agent"].received[-1]["sender"] == env["agent"].received[-2]["sender"]
    assert env["agent"].received[-1]["text"] == "Postmenopausal woman"


def test_a_card_click_in_a_channel_needs_no_mention(env):
    thread = f"19:{uuid.uuid4().hex}@thread.tacv2;messageid=1700000000300"
    click = make(env, "", scope="channel", conversation=thread, value={"cg81_reply": "show 1.3.5"})
    assert post(env, click)[1]["handled"] == "accepted"
    assert first_id(replies(env, thread)[0]) == "1.3.5"


# ---------------------------------------------------------------------- retries, bots and odd activities
def test_a_retried_activity_is_answered_once(env):
    act = make(env, "should I monitor with PET-CT?")
    assert post(env, act)[1]["handled"] == "accepted"
    assert post(env, act)[1]["handled"] == "duplicate"
    replies(env, act["conversation"]["id"])
    time.sleep(0.4)
    assert len(env["fake"].replies.matching(lambda r: r["conversation"] == act["conversation"]["id"]
                                            and r["body"]["type"] == "message")) == 1


@pytest.mark.parametrize("change,reason", [
    ({"from": {"id": "28:" + APP_ID, "name": "CG81 Assistant"}}, "bot message"),
    ({"from": {"id": "28:another-bot", "role": "bot"}}, "bot message"),
    ({"type": "messageUpdate"}, "activity type messageUpdate"),
    ({"type": "messageDelete"}, "activity type messageDelete"),
    ({"type": "conversationUpdate", "membersAdded": [{"id": "29:x"}]}, "activity type conversationUpdate"),
    ({"type": "invoke", "name": "adaptiveCard/action"}, "activity type invoke"),
    ({"conversation": None}, "missing id, conversation, from or recipient"),
    ({"id": None}, "missing id, conversation, from or recipient"),
    ({"conversation": {"id": "a:1x", "conversationType": "personal", "tenantId": "other-tenant"}}, "other tenant"),
    ({"value": {"some": "other card"}}, "card submit without a reply"),
])
def test_bot_edited_deleted_and_other_activities_are_ignored(env, change, reason):
    act = {k: v for k, v in {**make(env, "should I monitor with PET-CT?"), **change}.items() if v is not None}
    if "value" in change:
        act["text"] = ""
    status, body, _ = post(env, act)
    assert (status, body["handled"], body["reason"]) == (200, "ignored", reason)


def test_only_a_mention_gets_the_prompt_and_files_alone_are_ignored(env):
    conv = f"19:{uuid.uuid4().hex}@thread.v2"
    act = make(env, "", scope="groupChat", conversation=conv, mention_bot=True)
    post(env, act)
    [reply] = replies(env, conv)
    assert reply["body"]["text"] == answer.EMPTY_MESSAGE and reply["body"]["textFormat"] == "plain"
    image = make(env, "", attachments=[{"contentType": "image/png", "contentUrl": "https://x.invalid/a.png"}])
    assert post(env, image)[1]["reason"] == "files only"


@pytest.mark.parametrize("raw,status", [(b"{not json", 400), (b"[]", 400), (b"\xff", 400)])
def test_malformed_bodies_get_400_after_authentication(env, raw, status):
    assert post(env, None, raw=raw)[0] == status
    assert post(env, None, raw=raw, token="")[0] == 401          # unauthenticated callers learn nothing more


def test_bodies_over_one_megabyte_are_refused(env):
    act = make(env, "x" * (1024 * 1024))
    status, body, _ = post(env, act)
    assert status == 413


@pytest.mark.parametrize("mode", ["raise", "hang", "silent"])
def test_a_failed_or_stalled_turn_says_no_recommendation_was_given(env, mode):
    env["agent"].mode = mode
    act = make(env, "bone mets imaging?")
    t0 = time.monotonic()
    post(env, act)
    [reply] = replies(env, act["conversation"]["id"])
    assert time.monotonic() - t0 < 10
    assert reply["body"]["text"] == answer.SERVICE_UNAVAILABLE


# ---------------------------------------------------------------------- configuration
def test_configuration_from_the_environment(monkeypatch, caplog):
    for var in ("MICROSOFT_APP_ID", "MICROSOFT_APP_PASSWORD", "MICROSOFT_APP_TENANT_ID", "MICROSOFT_APP_TYPE",
                "BOTFRAMEWORK_OPENID_METADATA_URL", "MICROSOFT_LOGIN_URL"):
        monkeypatch.delenv(var, raising=False)
    with caplog.at_level(logging.INFO, logger="assistant.rasa.teams"):
        assert not TeamsInput.from_credentials({}).config.enabled
    assert [r.getMessage() for r in caplog.records if r.name == "assistant.rasa.teams"] == [
        "Microsoft Teams channel disabled: set MICROSOFT_APP_ID and MICROSOFT_APP_PASSWORD; "
        "/webhooks/teams/webhook answers 503"]
    base = {"MICROSOFT_APP_ID": APP_ID, "MICROSOFT_APP_PASSWORD": "p"}
    assert "MICROSOFT_APP_TENANT_ID" in TeamsConfig.from_env(base).problem          # single tenant by default
    assert "not SingleTenant or MultiTenant" in TeamsConfig.from_env({**base, "MICROSOFT_APP_TYPE": "MSI"}).problem
    cfg = TeamsConfig.from_env({**base, "MICROSOFT_APP_TENANT_ID": TENANT})
    assert cfg.enabled and cfg.app_type == "SingleTenant"
    assert cfg.openid_url == "https://login.botframework.com/v1/.well-known/openidconfiguration"
    assert cfg.token_url == f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"


def test_a_disabled_channel_answers_503(env):
    loop = env["loop"]
    server = loop.run(ServerUnderTest([TeamsInput(TeamsConfig.from_env({}))], ScriptedAgent(), free_port()).start())
    try:
        status, body, _ = post(env, make(env, "hi"), url=f"{server.base}/webhooks/teams/webhook")
        assert status == 503 and "MICROSOFT_APP_ID" in body["error"]
    finally:
        loop.run(server.stop())
