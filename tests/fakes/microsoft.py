"""A fake Microsoft: Bot Framework OpenID metadata and JWKS (from an RSA key made at test time), the Entra ID
token endpoint, and a Bot Connector service that records replies.

    fake = FakeMicrosoft(app_id, app_password, tenant); await fake.start()
    fake.openid_url, fake.login_url, fake.service_url   → the channel's environment and activities
    fake.channel_token(...)                             → an inbound JWT as the Bot Connector signs it
    fake.replies                                        → Recorder of activities POSTed to the connector
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from urllib.parse import parse_qs, unquote

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from .loop import Recorder

ISSUER = "https://api.botframework.com"


def new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk_of(key, kid: str, endorsements=("msteams",)) -> dict:
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": kid, "use": "sig", "x5t": kid, "issuer": ISSUER})
    if endorsements is not None:
        jwk["endorsements"] = list(endorsements)
    return jwk


class FakeMicrosoft:
    def __init__(self, app_id: str, app_password: str, tenant: str, token_lifetime: int = 3600) -> None:
        self.app_id = app_id
        self.app_password = app_password
        self.tenant = tenant
        self.token_lifetime = token_lifetime
        self.key = new_key()
        self.kid = f"test-{uuid.uuid4().hex[:8]}"
        self.extra_keys: list = []           # (key, kid, endorsements) published beside the main key
        self.available = True                # False: metadata and keys answer 503
        self.stall = False                   # True: metadata hangs (tests the fetch timeout)
        self.metadata_fetches = 0
        self.jwks_fetches = 0
        self.token_requests = Recorder()
        self.replies = Recorder()
        self.issued: dict = {}               # access token → expiry (time.time())
        self.runner = None
        self.port = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openid_url(self) -> str:
        return f"{self.base}/v1/.well-known/openidconfiguration"

    @property
    def login_url(self) -> str:
        return f"{self.base}/login"

    @property
    def service_url(self) -> str:
        return f"{self.base}/connector/"

    async def start(self) -> FakeMicrosoft:
        app = web.Application()
        app.router.add_get("/v1/.well-known/openidconfiguration", self._metadata)
        app.router.add_get("/v1/.well-known/keys", self._keys)
        app.router.add_post("/login/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_post("/connector/{tail:.*}", self._connector)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    # ------------------------------------------------------------------ OpenID metadata and keys
    async def _metadata(self, request: web.Request) -> web.Response:
        self.metadata_fetches += 1
        if self.stall:
            await asyncio.sleep(60)
        if not self.available:
            return web.Response(status=503)
        return web.json_response({"issuer": ISSUER, "authorization_endpoint": "https://invalid.botframework.com",
                                  "jwks_uri": f"{self.base}/v1/.well-known/keys",
                                  "id_token_signing_alg_values_supported": ["RS256"],
                                  "token_endpoint_auth_methods_supported": ["private_key_jwt"]})

    async def _keys(self, request: web.Request) -> web.Response:
        self.jwks_fetches += 1
        if not self.available:
            return web.Response(status=503)
        keys = [jwk_of(self.key, self.kid)] + [jwk_of(k, kid, e) for k, kid, e in self.extra_keys]
        return web.json_response({"keys": keys})

    def channel_token(self, service_url: str | None = None, *, key=None, kid: str | None = None,
                      alg: str = "RS256", **claims) -> str:
        """An inbound token as the Bot Connector signs it; keyword claims override (None removes one)."""
        now = int(time.time())
        body = {"serviceurl": service_url or self.service_url, "nbf": now - 5, "exp": now + 3600,
                "iss": ISSUER, "aud": self.app_id}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        headers = {"kid": kid or self.kid}
        if alg == "RS256":
            return jwt.encode(body, key or self.key, algorithm="RS256", headers=headers)
        if alg == "none":
            return jwt.encode(body, None, algorithm="none", headers=headers)
        return jwt.encode(body, "shared-secret-that-is-long-enough-for-hs256!", algorithm=alg, headers=headers)

    # ------------------------------------------------------------------ Entra ID token endpoint
    async def _token(self, request: web.Request) -> web.Response:
        form = {k: v[0] for k, v in parse_qs((await request.read()).decode()).items()}
        tenant = request.match_info["tenant"]
        self.token_requests.add({"t": time.perf_counter(), "tenant": tenant, "form": form})
        if (form.get("grant_type") != "client_credentials" or form.get("client_id") != self.app_id
                or form.get("client_secret") != self.app_password
                or form.get("scope") != "https://api.botframework.com/.default"):
            return web.json_response({"error": "invalid_client"}, status=401)
        token = f"fake-access-{uuid.uuid4().hex}"
        self.issued[token] = time.time() + self.token_lifetime
        return web.json_response({"token_type": "Bearer", "expires_in": self.token_lifetime,
                                  "ext_expires_in": self.token_lifetime, "access_token": token})

    # ------------------------------------------------------------------ Bot Connector
    async def _connector(self, request: web.Request) -> web.Response:
        t = time.perf_counter()
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ")
        if self.issued.get(token, 0) < time.time():
            return web.json_response({"error": {"code": "Unauthorized"}}, status=401)
        parts = request.rel_url.raw_path.split("/")
        # /connector/v3/conversations/{id}/activities/{replyToId}
        if len(parts) != 7 or parts[2:4] != ["v3", "conversations"] or parts[5] != "activities":
            return web.json_response({"error": {"code": "BadSyntax"}}, status=400)
        body = await request.json()
        self.replies.add({"t": t, "conversation": unquote(parts[4]), "reply_to": unquote(parts[6]),
                          "raw_conversation": parts[4], "body": body})
        return web.json_response({"id": f"reply-{uuid.uuid4().hex[:10]}"})


def activity(text: str, *, service_url: str, app_id: str, tenant: str, user: str = "29:user-a",
             aad: str | None = None, conversation: str | None = None, scope: str = "personal",
             activity_id: str | None = None, mention_bot: bool = False, value: dict | None = None,
             bot_name: str = "CG81 Assistant", **extra) -> dict:
    """A Teams message activity as the Bot Connector delivers it."""
    bot_id = f"28:{app_id}"
    conv = conversation or (f"a:1{uuid.uuid4().hex}" if scope == "personal"
                            else f"19:{uuid.uuid4().hex}@thread.v2" if scope == "groupChat"
                            else f"19:{uuid.uuid4().hex}@thread.tacv2")
    out = {"type": "message", "id": activity_id or str(int(time.time() * 1000) * 1000 + uuid.uuid4().int % 1000),
           "timestamp": "2026-11-27T10:00:00.000Z", "serviceUrl": service_url, "channelId": "msteams",
           "from": {"id": user, "name": "Dr Clinician", "aadObjectId": aad or f"aad-{user}"},
           "conversation": {"id": conv, "conversationType": scope, "tenantId": tenant,
                            **({"isGroup": True} if scope != "personal" else {})},
           "recipient": {"id": bot_id, "name": bot_name},
           "textFormat": "plain", "locale": "en-GB", "text": text,
           "channelData": {"tenant": {"id": tenant}}, "entities": [], **extra}
    if mention_bot:
        tag = f"<at>{bot_name}</at>"
        out["text"] = f"{tag} {text}"
        out["entities"].append({"type": "mention", "text": tag, "mentioned": {"id": bot_id, "name": bot_name}})
    if value is not None:
        out["value"] = value
        out["text"] = ""
    return out
