"""Gold-set evaluation: the same metrics whether turns go through the core or the Rasa REST channel."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from assistant import config
from assistant.lexicon import load_yaml_validated

GOLD_SCHEMA = config.ROOT / "tests" / "gold" / "gold.schema.json"
METRIC_NAMES = ("top1", "recall_at_3", "mrr", "abstention_precision", "abstention_recall", "exact_text")


class GoldError(ValueError):
    """The gold file does not follow the gold-set format."""


def load_gold(path) -> list:
    data = load_yaml_validated(Path(path), GOLD_SCHEMA, GoldError)
    ids = [i["id"] for i in data["items"]]
    if len(ids) != len(set(ids)):
        raise GoldError(f"{path}: duplicated item ids")
    return data["items"]


def run_core(assistant, turns: list) -> dict:
    state: dict = {}
    reply = None
    for turn in turns:
        reply = assistant.respond(turn, state)
        state = reply.state
    return reply.payload or {"abstained": True, "answers": []}


class RestClient:
    """Plays a conversation against Rasa's REST channel and returns the last turn's guideline payload."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/") + "/webhooks/rest/webhook"
        self.timeout = timeout

    def send(self, sender: str, message: str) -> list:
        body = json.dumps({"sender": sender, "message": message}).encode("utf-8")
        req = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))

    def run(self, turns: list) -> dict:
        sender = f"eval-{uuid.uuid4().hex[:12]}"
        messages: list = []
        for turn in turns:
            messages = self.send(sender, turn)
        for m in messages:
            custom = m.get("custom")
            if isinstance(custom, dict) and custom.get("type") == "guideline_answer":
                return custom
        return {"abstained": True, "answers": [], "reason": "no_guideline_payload"}


def score(items: list, payloads: list, corpus_by_id: dict) -> dict:
    results = []
    for item, payload in zip(items, payloads):
        answers = payload.get("answers") or []
        predicted = [a["id"] for a in answers]
        abstained = bool(payload.get("abstained")) or not predicted
        exact = all(a.get("text") == corpus_by_id.get(a["id"], {}).get("text") for a in answers)
        expected = item["expected"]
        rank = next((i + 1 for i, p in enumerate(predicted) if p in expected), None) if not abstained else None
        results.append({"id": item["id"], "turns": item["turns"], "expected": expected, "predicted": predicted,
                        "abstained": abstained, "correct": (abstained if not expected else rank == 1),
                        "rank": rank, "exact_text": exact, "tags": item.get("tags", []),
                        "clarification": bool(payload.get("clarification")), "reason": payload.get("reason")})
    return {"metrics": metrics(results), "items": results}


def metrics(results: list) -> dict:
    answerable = [r for r in results if r["expected"]]
    oos = [r for r in results if not r["expected"]]
    abstained = [r for r in results if r["abstained"]]
    n = max(len(answerable), 1)
    out = {
        "items": len(results), "answerable": len(answerable), "out_of_scope": len(oos),
        "top1": sum(r["rank"] == 1 for r in answerable) / n,
        "recall_at_3": sum(r["rank"] is not None and r["rank"] <= 3 for r in answerable) / n,
        "mrr": sum(1 / r["rank"] for r in answerable if r["rank"]) / n,
        "abstention_precision": (sum(not r["expected"] for r in abstained) / len(abstained)) if abstained else 1.0,
        "abstention_recall": (sum(r["abstained"] for r in oos) / len(oos)) if oos else 1.0,
        "exact_text": sum(r["exact_text"] for r in results) / max(len(results), 1),
    }
    tags: dict = {}
    for r in results:
        for t in r["tags"]:
            tags.setdefault(t, []).append(r)
    out["by_tag"] = {t: {"n": len(rs), "correct": round(sum(r["correct"] for r in rs) / len(rs), 4)}
                     for t, rs in sorted(tags.items())}
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def evaluate(items: list, run, corpus_by_id: dict, progress: bool = True) -> dict:
    payloads = []
    iterator = items
    if progress:
        try:
            from tqdm import tqdm

            iterator = tqdm(items, desc="eval", unit="q", file=sys.stderr)
        except ImportError:  # the progress bar is a convenience, not a requirement
            pass
    for item in iterator:
        try:
            payloads.append(run(item["turns"]))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            payloads.append({"abstained": True, "answers": [], "reason": f"error: {exc}"})
    return score(items, payloads, corpus_by_id)


def report_markdown(result: dict, title: str, baselines: dict | None = None) -> str:
    m = result["metrics"]
    lines = [f"# {title}", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {m[k]} |" for k in ("items", "answerable", "out_of_scope") + METRIC_NAMES]
    if baselines:
        lines += ["", "## Ranking only (no abstention), answerable items", "",
                  "| retriever | top-1 | recall@3 | MRR |", "| --- | --- | --- | --- |"]
        lines += [f"| {name} | {b['top1']} | {b['recall_at_3']} | {b['mrr']} |" for name, b in baselines.items()]
    lines += ["", "## By tag", "", "| tag | n | correct |", "| --- | --- | --- |"]
    lines += [f"| {t} | {v['n']} | {v['correct']} |" for t, v in m["by_tag"].items()]
    misses = [r for r in result["items"] if not r["correct"]]
    lines += ["", f"## Misses ({len(misses)})", ""]
    lines += [f"- {r['id']} {r['turns']} expected {r['expected'] or 'abstain'}, got "
              f"{'abstain' if r['abstained'] else r['predicted']}" for r in misses]
    return "\n".join(lines) + "\n"


def check_floor(m: dict, floors: dict) -> list:
    return [f"{k} = {m.get(k)} < {v}" for k, v in floors.items() if m.get(k) is None or m[k] < v]
