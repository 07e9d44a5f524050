"""Health endpoints of a Rasa replica (an input channel, so `rasa run` serves it without --enable-api).

  GET /webhooks/health/        200 {"status": "ok", ...} or 503 {"status": "degraded", "reason": ...}:
                               the model is loaded, the tracker store answers SELECT 1 and Redis (when
                               configured) answers PING, each within 3 s. For monitoring and alerts.
  GET /webhooks/health/ready   200 once the model is loaded (readiness: the replica can answer, if only
                               with the service-unavailable message while a store is down).
  GET /webhooks/health/live    200 while the event loop answers (liveness).

Readiness deliberately ignores the stores: were every replica taken out of the load balancer during a
database outage, clinicians would get a proxy error page instead of the clear "no recommendation has
been given" message. Registering this channel also arms Rasa's fail-safe tracker store wrapper so that
it raises instead of falling back to memory (assistant/rasa/stores.py).
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Dict

from rasa.core.channels.channel import InputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from assistant.rasa import stores

log = logging.getLogger(__name__)
NO_CACHE = {"Cache-Control": "no-store"}


def _arm(app: Any) -> bool:
    agent = getattr(app.ctx, "agent", None)
    if agent is None:
        return False
    store = stores.guideline_store(agent)
    if store is not None and store.armed:
        return True
    armed = stores.arm_fail_safe(agent)
    if armed:
        log.info("tracker store fail-safe armed: a database failure fails the turn, never falls back to memory")
    return armed


class HealthInput(InputChannel):
    @classmethod
    def name(cls) -> str:
        return "health"

    @classmethod
    def from_credentials(cls, credentials: Dict[str, Any] | None) -> HealthInput:
        return cls()

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        hook = Blueprint("cg81_health", __name__)

        @hook.listener("after_server_start")
        async def arm(app, _loop) -> None:  # the agent is loaded by Rasa's before_server_start listener
            if not _arm(app):
                log.warning("health: no SQL tracker store of ours to arm (agent not loaded or store not configured)")

        @hook.route("/", methods=["GET"])
        async def health(request: Request) -> HTTPResponse:
            _arm(request.app)
            agent = getattr(request.app.ctx, "agent", None)
            healthy, details = await stores.health(agent)
            body = {"status": "ok" if healthy else "degraded", **details}
            return response.json(body, status=200 if healthy else 503, headers=NO_CACHE)

        @hook.route("/ready", methods=["GET"])
        async def ready(request: Request) -> HTTPResponse:
            agent = getattr(request.app.ctx, "agent", None)
            if agent is None or not agent.is_ready():
                return response.json({"status": "starting"}, status=503, headers=NO_CACHE)
            _arm(request.app)
            return response.json({"status": "ready"}, headers=NO_CACHE)

        @hook.route("/live", methods=["GET"])
        async def live(request: Request) -> HTTPResponse:
            return response.json({"status": "alive"}, headers=NO_CACHE)

        return hook
