"""What every channel does around a turn, for clinical governance: identifiers out before Rasa sees the
text, one audit record after the turn, the REST bearer token, security headers, and an action-server
timeout short enough that a clinician hears "no recommendation has been given" within seconds.

Imported by the Rasa server only (the channels); the pieces it uses (privacy, audit) are plain core code.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os

from sanic import response
from sanic.request import Request
from sanic.response import HTTPResponse

from assistant import privacy
from assistant.audit import AuditError, AuditStore

log = logging.getLogger(__name__)
API_TOKEN_ENV = "CG81_API_TOKEN"
DEV_MODE_ENV = "CG81_DEV_MODE"          # set by `make run` / `make serve` on loopback only
ACTION_TIMEOUT_ENV = "CG81_ACTION_TIMEOUT"
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                    "X-Frame-Options": "DENY", "Cache-Control": "no-store",
                    "Permissions-Policy": "camera=(), microphone=(), geolocation=()"}


# ---------------------------------------------------------------------- identifiers
def redact(text: str) -> privacy.Redaction:
    return privacy.redact(text)


def with_reminder(messages: list, redaction: privacy.Redaction) -> list:
    """The reply, with the reminder not to enter identifiers when some were removed. The recommendation
    answer itself is unchanged."""
    if not redaction.redacted:
        return messages
    return list(messages) + [{"text": privacy.REMINDER}]


# ---------------------------------------------------------------------- audit
_store: AuditStore | None = None
_store_failed = False


def audit_store() -> AuditStore | None:
    """The process's audit store (the tracker database), opened on first use."""
    global _store, _store_failed
    if _store is None and not _store_failed:
        try:
            _store = AuditStore()
        except AuditError as exc:
            _store_failed = True
            log.error("audit store unavailable: %s", exc)
    return _store


def guideline_payload(messages: list) -> dict | None:
    for m in messages:
        custom = m.get("custom")
        if isinstance(custom, dict) and custom.get("type") == "guideline_answer":
            return custom
    return None


async def audit_turn(*, channel: str, user: str, conversation: str, redaction: privacy.Redaction, messages: list,
                     seconds: float, status: str = "ok", turn_id: str | None = None) -> str | None:
    """Append the turn to the audit trail (off the event loop). Returns the turn ID, or None when the
    store is unavailable (logged: the clinician still gets the reply)."""
    store = audit_store()
    if store is None:
        return None
    payload = guideline_payload(messages)
    kind = {"ok": None, "early": "invalid"}.get(status, "error")
    if payload is None and kind is None:
        kind = "other"
    try:
        return await asyncio.to_thread(store.record_turn, channel=channel, user=user, conversation=conversation,
                                       question=redaction.text, payload=payload, latency_ms=seconds * 1000.0,
                                       identifiers=redaction.found, kind=kind, turn_id=turn_id)
    except Exception as exc:  # noqa: BLE001 - an audit failure is logged, never a lost reply
        log.error("audit record not written (%s)", type(exc).__name__)
        return None


async def audit_feedback(turn_id: str, value: str, answer_ids: list) -> None:
    store = audit_store()
    if store is None:
        return
    try:
        await asyncio.to_thread(store.record_feedback, turn_id, value, answer_ids)
    except Exception as exc:  # noqa: BLE001
        log.error("audit feedback not written (%s)", type(exc).__name__)


# ---------------------------------------------------------------------- authentication
def _loopback(request: Request) -> bool:
    try:
        return ipaddress.ip_address(request.ip).is_loopback
    except ValueError:
        return False


def check_bearer(request: Request, token_env: str = API_TOKEN_ENV) -> HTTPResponse | None:
    """None when the request may proceed. The token comes from the environment; without one, only local
    development mode (set by `make run` on loopback) accepts requests, and only from loopback."""
    token = os.environ.get(token_env)
    if not token:
        if os.environ.get(DEV_MODE_ENV) == "1" and _loopback(request):
            return None
        return response.json({"error": f"authentication is not configured: set {token_env}"}, status=401)
    header = request.headers.get("authorization") or ""
    if not header.startswith("Bearer "):
        return response.json({"error": "missing bearer token"}, status=401,
                             headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(header[len("Bearer "):].encode(), token.encode()):
        return response.json({"error": "wrong bearer token"}, status=401, headers={"WWW-Authenticate": "Bearer"})
    return None


def add_security_headers(resp: HTTPResponse) -> HTTPResponse:
    for name, value in SECURITY_HEADERS.items():
        resp.headers.setdefault(name, value)
    return resp


# ---------------------------------------------------------------------- action timeout
def limit_action_timeout() -> float:
    """Rasa waits up to 300 s for a custom action; a stalled action server would hold the clinician for
    that long. Rasa reads the module constant at call time, so setting it here (imported at start-up
    with the channels) bounds every action call."""
    seconds = float(os.environ.get(ACTION_TIMEOUT_ENV, "8"))
    try:
        import rasa.core.actions.action as rasa_action

        rasa_action.DEFAULT_REQUEST_TIMEOUT = seconds
    except ImportError:  # the core's tests import this module without Rasa
        pass
    return seconds
