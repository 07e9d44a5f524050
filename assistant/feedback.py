"""Clinicians' thumbs up/down on answers: an append-only JSON-lines review record, and its export as
candidate gold-set items (tests/gold format) for a person to review before they join a gold set.

The record holds the question text because it is what a reviewer needs; it is never logged. Until the
service issue provides an audit store, records go to var/feedback.jsonl (CG81_FEEDBACK_PATH overrides).
Standard library only: imported by the Rasa server (Python 3.10) and by scripts/export_feedback.py.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path

from assistant import config

VALUES = ("up", "down")
_LOCK = threading.Lock()


def path() -> Path:
    return Path(os.environ.get("CG81_FEEDBACK_PATH") or config.ROOT / "var" / "feedback.jsonl")


def record(conversation_id: str, turn_id: str, value: str, rec_ids: list, turns: list, payload: dict | None,
           channel: str = "web") -> dict:
    """One feedback line: who (conversation), which turn, the verdict, and the turn as it was answered."""
    payload = payload or {}
    return {"ts": datetime.now(timezone.utc).isoformat(timespec="seconds"), "channel": channel,
            "conversation_id": conversation_id, "turn_id": turn_id, "value": value, "rec_ids": list(rec_ids),
            "turns": list(turns), "answer_ids": [a.get("id") for a in payload.get("answers") or []],
            "abstained": bool(payload.get("abstained")), "reason": payload.get("reason"),
            "clarification": (payload.get("clarification") or {}).get("question")}


def append(entry: dict, target: Path | None = None) -> Path:
    """Append one line; a single write of one line so concurrent writers never interleave within a line."""
    target = target or path()
    target.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
    with _LOCK:
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    return target


def load(source: Path | None = None) -> list:
    """Every readable record, in file order (a torn or foreign line is skipped, not fatal)."""
    source = source or path()
    if not source.exists():
        return []
    out = []
    for line in source.read_text(encoding="utf-8").splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict) and item.get("value") in VALUES and item.get("turns"):
            out.append(item)
    return out


def latest(records: list) -> list:
    """The last verdict per (conversation, turn, recommendation): a clinician may change their mind."""
    last: dict = {}
    for r in records:
        ids = r.get("rec_ids") or []
        for rec in ids or [None]:
            last[(r["conversation_id"], r["turn_id"], rec)] = r
    return list(last.values())


def gold_items(records: list) -> tuple:
    """(items, rejected): candidate gold items from thumbs-up verdicts, and the thumbs-down turns.

    A turn whose answers got thumbs up becomes an item expecting those IDs in the order the assistant
    ranked them; a thumbs-up on an abstention becomes an out-of-scope item (expected: []).
    """
    turns: dict = {}
    for r in latest(records):
        key = (r["conversation_id"], r["turn_id"])
        turn = turns.setdefault(key, {"record": r, "up": set(), "down": set(), "abstain_up": False})
        if r["value"] == "up":
            if r.get("rec_ids"):
                turn["up"].update(r["rec_ids"])
            elif r.get("abstained"):
                turn["abstain_up"] = True
        else:
            turn["down"].update(r.get("rec_ids") or ["(abstention)"])
    items, rejected = [], []
    for n, ((conv, _turn), t) in enumerate(sorted(turns.items(), key=lambda kv: kv[1]["record"]["ts"]), 1):
        r = t["record"]
        up = [i for i in r.get("answer_ids") or [] if i in t["up"]] + sorted(t["up"] - set(r.get("answer_ids") or []))
        base = {"id": f"fb{n:03d}-{conv[-6:]}", "turns": list(r["turns"])}
        if up:
            items.append({**base, "expected": up, "tags": ["feedback", r.get("channel", "web")]
                          + (["multi_turn"] if len(r["turns"]) > 1 else [])})
        elif t["abstain_up"]:
            items.append({**base, "expected": [], "tags": ["feedback", r.get("channel", "web"), "out_of_scope"]})
        if t["down"]:
            rejected.append({**base, "answered": r.get("answer_ids") or [], "thumbs_down": sorted(t["down"])})
    return items, rejected
