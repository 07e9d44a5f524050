"""One shared Assistant per process, loaded on first request rather than at import."""

from __future__ import annotations

import threading

_LOCK = threading.Lock()
_ASSISTANT = None


def shared_assistant():
    global _ASSISTANT
    with _LOCK:
        if _ASSISTANT is None:
            from assistant.dialogue import Assistant
            from assistant.retrieval import Retriever

            _ASSISTANT = Assistant(Retriever.load())
        return _ASSISTANT
