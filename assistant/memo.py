"""A small bounded memo: a turn looks at the same texts several times (question, merged topic,
expansion), and clinicians repeat questions; both the entity extractor and the encoder keep recent
results. Oldest entries are dropped first."""

from __future__ import annotations


class BoundedMemo:
    def __init__(self, size: int) -> None:
        self.size = size
        self._data: dict = {}

    def get(self, key, compute):
        value = self._data.get(key)
        if value is None:
            value = compute(key)
            if len(self._data) >= self.size:
                self._data.pop(next(iter(self._data)))
            self._data[key] = value
        return value

    def clear(self) -> None:
        self._data.clear()
