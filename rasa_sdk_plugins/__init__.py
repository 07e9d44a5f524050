"""rasa-sdk's plugin hook (it imports a top-level `rasa_sdk_plugins` package and calls `init_hooks`):
the action server's security, attached to the Sanic app in every worker.

- Every call but /health must carry the shared secret Rasa sends (`Authorization: Bearer
  $CG81_ACTION_TOKEN`, set in endpoints.yml): 401 without it, 403 with a wrong one, compared in constant
  time. With no token configured the server refuses every action call (503), it never runs open.
- rasa-sdk's own error handler echoes the whole request (the tracker, with the clinician's text) in a 500:
  replaced by one that returns a fixed message and logs no request content.
- Security headers on every response.
"""

from __future__ import annotations

import hmac
import logging
import os
import sys

import pluggy
from sanic import Sanic, response

hookimpl = pluggy.HookimplMarker("rasa_sdk")
log = logging.getLogger("cg81.actions.security")
TOKEN_ENV = "CG81_ACTION_TOKEN"
OPEN_PATHS = {"/health"}
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
                    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'"}


def init_hooks(manager: pluggy.PluginManager) -> None:
    manager.register(sys.modules[__name__])


def check(authorization: str | None, token: str | None) -> int | None:
    """None when the call may proceed, else the HTTP status to refuse it with."""
    if not token:
        return 503
    if not authorization or not authorization.startswith("Bearer "):
        return 401
    if not hmac.compare_digest(authorization[len("Bearer "):].encode(), token.encode()):
        return 403
    return None


@hookimpl
def attach_sanic_app_extensions(app: Sanic) -> None:
    token = os.environ.get(TOKEN_ENV)
    if not token:
        log.error("%s is not set: the action server refuses every action call", TOKEN_ENV)

    async def authenticate(request):
        if request.path in OPEN_PATHS:
            return None
        status = check(request.headers.get("authorization"), token)
        if status is None:
            return None
        log.warning("action server call refused with %s (%s %s)", status, request.method, request.path)
        message = {401: "authentication required", 403: "wrong credentials",
                   503: "the action server has no token configured"}[status]
        return response.json({"error": message}, status=status)

    async def add_headers(request, resp):
        for name, value in SECURITY_HEADERS.items():
            resp.headers.setdefault(name, value)

    async def safe_error(request, exception: Exception):
        # The request body holds the tracker with the clinician's messages: never echo or log it.
        log.error("action server error %s on %s", type(exception).__name__, request.path)
        return response.json({"error": "internal error in the action server"}, status=500)

    app.register_middleware(authenticate, "request")
    app.register_middleware(add_headers, "response")
    # rasa-sdk has already registered its echoing handler for Exception and Sanic refuses a second one for
    # the same key: replace it in the handler table.
    app.error_handler.cached_handlers[(Exception, None)] = safe_error
