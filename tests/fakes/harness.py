"""Connector tests: our channels registered on a Sanic app by Rasa's own `register()`, served for real on a
free port, with a scripted agent in place of the trained model and action server.

The scripted agent does what Rasa's processor does at the channel boundary: it receives the UserMessage and
calls `output_channel.send_response` with {text, buttons, custom} messages built by the core's own
`assistant.answer` helpers from real corpus records. It keeps per-sender context, so conversation identity
is observable ("and for men?" means something only after an endocrine question from the same sender). The
end-to-end tests (tests/test_channels_e2e.py) run the real Rasa server and action server instead.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid

from assistant import answer, corpus

CLARIFICATION = {"question": "The recommendation depends on the patient. Is this a postmenopausal woman, a "
                             "premenopausal or perimenopausal woman, or a man?",
                 "options": ["Postmenopausal woman", "Premenopausal or perimenopausal woman", "Man"]}


class ScriptedAgent:
    def __init__(self) -> None:
        self.records = {r["id"]: r for r in corpus.load()}
        self.context: dict = {}
        self.received: list = []
        self.mode = "ok"          # ok | hang | raise | silent
        self.delay = 0.0
        self.lock_store = None    # tests set a Rasa RedisLockStore here

    def items(self, *ids: str) -> list:
        return [answer.answer_item(self.records[i], 0.8) for i in ids]

    def _answer(self, *ids: str, notes=None) -> dict:
        items = self.items(*ids)
        return {"text": answer.answer_text(items, notes=notes), "custom": answer.payload(items, notes=notes)}

    def reply(self, sender: str, text: str) -> dict:
        low = text.lower()
        if low in ("hello", "hi"):
            return {"text": "Hello! I answer questions with NICE CG81 recommendations."}
        if low.startswith("show "):
            rec = text.split()[1]
            if rec in self.records:
                self.context[sender] = "lookup"
                return self._answer(rec)
        if "dose" in low:
            reason = "out_of_scope:oos_dosing"
            return {"text": answer.abstention_text(reason), "custom": answer.abstention_payload(reason)}
        if "pet-ct" in low:
            self.context[sender] = "monitoring"
            return self._answer("1.1.8")
        if "brain metastases" in low and "list" in low:
            ids = ["1.5.18", "1.5.19", "1.5.20", "1.5.21"]
            recs = [self.records[i] for i in ids]
            return {"text": answer.list_text(recs), "custom": answer.payload(self.items(*ids))}
        if "endocrine" in low and "postmenopausal" in low:
            self.context[sender] = "endocrine"
            return self._answer("1.3.4", "1.3.5", "1.3.7")
        if "endocrine" in low:
            self.context[sender] = "clarify"
            items = self.items("1.3.4", "1.3.5", "1.3.7")
            return {"text": answer.clarification_text(CLARIFICATION, items),
                    "buttons": [{"title": o, "payload": o} for o in CLARIFICATION["options"]],
                    "custom": answer.payload(items, clarification=CLARIFICATION)}
        if text == "Postmenopausal woman" and self.context.get(sender) == "clarify":
            self.context[sender] = "endocrine"
            return self._answer("1.3.4")
        if "men?" in low and self.context.get(sender) == "endocrine":
            return self._answer("1.3.7")
        reason = "no_answer"
        return {"text": answer.abstention_text(reason), "custom": answer.abstention_payload(reason)}

    async def handle_message(self, message) -> None:
        self.received.append({"sender": message.sender_id, "text": message.text,
                              "channel": message.input_channel, "metadata": message.metadata})
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "raise":
            raise ConnectionError("action server unreachable")
        if self.mode == "silent":
            return
        await message.output_channel.send_response(message.sender_id, dict(self.reply(message.sender_id,
                                                                                       message.text)))


class ServerUnderTest:
    """A Sanic app with the given input channels, registered by rasa.core.channels.channel.register."""

    def __init__(self, channels: list, agent: ScriptedAgent, port: int) -> None:
        from rasa.core.channels.channel import register
        from sanic import Sanic

        # Sanic 21.12 rewrites its request handler when an app starts ("touch-up") and cannot do that twice
        # in one process unless in test mode, which keeps the original to rewrite from.
        Sanic.test_mode = True
        self.app = Sanic(f"cg81_channels_test_{uuid.uuid4().hex[:8]}", configure_logging=False)
        self.app.ctx.agent = agent
        register(channels, self.app, route="/webhooks/")
        self.port = port
        self.server = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> ServerUnderTest:
        server = await self.app.create_server(host="127.0.0.1", port=self.port, return_asyncio_server=True,
                                              access_log=False)
        await server.startup()
        await server.before_start()
        await server.after_start()
        self.server = server
        return self

    async def stop(self) -> None:
        if self.server is None:
            return
        await self.server.before_stop()
        self.server.close()
        await self.server.wait_closed()
        await self.server.after_stop()


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 30) -> tuple:
    """(status, parsed JSON body or raw text, headers) with urllib: a plain HTTP client, as Slack would be."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw, status, hdrs = resp.read(), resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        raw, status, hdrs = exc.read(), exc.code, dict(exc.headers)
    try:
        return status, json.loads(raw), hdrs
    except ValueError:
        return status, raw.decode(errors="replace"), hdrs
