"""An asyncio loop in a background thread: servers under test and the fakes run there, tests stay sync."""

from __future__ import annotations

import asyncio
import socket
import threading
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="fakes-loop", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro, timeout: float = 60):
        """Run a coroutine on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        async def _cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.run(_cancel_rest(), timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)


class Recorder:
    """A thread-safe list the fakes append to and tests wait on."""

    def __init__(self) -> None:
        self.items: list = []
        self._cond = threading.Condition()

    def add(self, item) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait(self, predicate, timeout: float = 20.0) -> list:
        """Wait until `predicate(items)` is true; return the matching items (a list)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [i for i in self.items if predicate(i)]
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)

    def wait_count(self, predicate, n: int, timeout: float = 20.0) -> list:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [i for i in self.items if predicate(i)]
                if len(found) >= n:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    return found
                self._cond.wait(left)

    def matching(self, predicate) -> list:
        with self._cond:
            return [i for i in self.items if predicate(i)]

    def clear(self) -> None:
        with self._cond:
            self.items.clear()
