"""REST channel for the guideline assistant: Rasa's REST channel with input checks and no silent turns.

Registered in credentials.yml under the name "rest", so clients keep the standard
POST /webhooks/rest/webhook {"sender": ..., "message": ...} contract.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Awaitable, Callable, Dict

from rasa.core.channels.channel import CollectingOutputChannel, UserMessage
from rasa.core.channels.rest import RestInput
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from assistant import answer, config
from assistant.dialogue import clean
from assistant.rasa import governance

log = logging.getLogger(__name__)
# Imported by Rasa at start-up with the channels: bound every action call (CG81_ACTION_TIMEOUT, 8 s), so a
# stalled action server gives "no recommendation has been given" within seconds, not Rasa's 300 s.
governance.limit_action_timeout()
MAX_SENDER_CHARS = 128
MAX_BODY_BYTES = 64 * 1024


def _bad_request(message: str, status: int = 400) -> HTTPResponse:
    return response.json({"error": message}, status=status)


def parse_body(body: bytes) -> tuple:
    """(sender, text, metadata) from a request body, or raise ValueError with a client-facing reason."""
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"request body over {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValueError("request body must be a JSON object")
    sender = data.get("sender", "default")
    message = data.get("message")
    if not isinstance(sender, str) or not sender.strip() or len(sender) > MAX_SENDER_CHARS:
        raise ValueError(f"'sender' must be a non-empty string of at most {MAX_SENDER_CHARS} characters")
    if message is None or not isinstance(message, str):
        raise ValueError("'message' must be a string")
    metadata = data.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ValueError("'metadata' must be a JSON object")
    return sender, message, metadata


def reply_without_nlu(text: str) -> str | None:
    """A reply for input that must not reach the dialogue (and so cannot disturb the conversation)."""
    cleaned = clean(text)
    if not cleaned:
        return answer.EMPTY_MESSAGE
    if len(text) > config.MAX_QUESTION_CHARS:
        return answer.too_long(config.MAX_QUESTION_CHARS)
    return None


class GuidelineRestInput(RestInput):
    @classmethod
    def name(cls) -> str:
        return "rest"

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        hook = Blueprint("guideline_rest_webhook", __name__)

        @hook.listener("before_server_start")
        async def secure_every_response(app, _loop) -> None:
            # App-wide, not only this blueprint's routes: Rasa's own "/" and every channel get the headers.
            async def headers(request, resp):
                governance.add_security_headers(resp)

            app.register_middleware(headers, "response")

        @hook.route("/", methods=["GET"])
        async def health(request: Request) -> HTTPResponse:
            return governance.add_security_headers(response.json({"status": "ok"}))

        @hook.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            from assistant.rasa.channel_common import run_turn

            refused = governance.check_bearer(request)
            if refused is not None:
                return governance.add_security_headers(refused)
            try:
                sender, text, metadata = parse_body(request.body or b"")
            except ValueError as exc:
                return governance.add_security_headers(_bad_request(str(exc), 413 if "bytes" in str(exc) else 400))
            # Rasa's own collector keeps the REST contract: the custom payload is its own message.
            turn = await run_turn(on_new_message, text, sender, self.name(), metadata=metadata,
                                  collector=CollectingOutputChannel())
            messages = [{"recipient_id": sender, **m} if "recipient_id" not in m else m for m in turn.messages]
            return governance.add_security_headers(response.json(messages))

        return hook

    @classmethod
    def from_credentials(cls, credentials: Dict[str, Any] | None) -> GuidelineRestInput:
        return cls()
