"""Gold-set evaluation: the same metrics whether turns go through the core or the Rasa REST channel."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from assistant import config
from assistant.lexicon import load_yaml_validated

GOLD_SCHEMA = config.ROOT / "tests" / "gold" / "gold.schema.json"
METRIC_NAMES = ("top1", "recall_at_3", "mrr", "abstention_precision", "abstention_recall", "exact_text",
                "multi_turn_top1")


class GoldError(ValueError):
    """The gold file does not follow the gold-set format."""


def load_gold(path) -> list:
    data = load_yaml_validated(Path(path), GOLD_SCHEMA, GoldError)
    ids = [i["id"] for i in data["items"]]
    if len(ids) != len(set(ids)):
        raise GoldError(f"{path}: duplicated item ids")
    return data["items"]


def run_core(assistant, turns: list) -> dict:
    """Play a conversation through the core; the last turn's payload, with the best candidate's fused
    score (also when the turn abstained) for the reliability diagram."""
    state: dict = {}
    reply = None
    for turn in turns:
        reply = assistant.respond(turn, state)
        state = reply.state
    payload = dict(reply.payload or {"abstained": True, "answers": []})
    candidates = reply.trace.get("candidates") or []
    if candidates:
        payload["_top_id"], payload["_top_score"] = candidates[0][0], candidates[0][1]
    return payload


class RestClient:
    """Plays a conversation against Rasa's REST channel and returns the last turn's guideline payload."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/") + "/webhooks/rest/webhook"
        self.timeout = timeout

    def send(self, sender: str, message: str) -> list:
        body = json.dumps({"sender": sender, "message": message}).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if os.environ.get("CG81_API_TOKEN"):
            headers["Authorization"] = f"Bearer {os.environ['CG81_API_TOKEN']}"
        req = urllib.request.Request(self.url, data=body, headers=headers)
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
        top_score = payload.get("_top_score")
        if top_score is None and answers and isinstance(answers[0].get("score"), (int, float)):
            top_score = answers[0]["score"]
        results.append({"id": item["id"], "turns": item["turns"], "expected": expected, "predicted": predicted,
                        "abstained": abstained, "correct": (abstained if not expected else rank == 1),
                        "rank": rank, "exact_text": exact, "tags": item.get("tags", []),
                        "clarification": bool(payload.get("clarification")), "reason": payload.get("reason"),
                        "top_score": top_score, "top_id": payload.get("_top_id") or (predicted or [None])[0],
                        "section": section_of(expected[0]) if expected else "out of scope"})
    return {"metrics": metrics(results), "items": results}


def section_of(rec_id: str) -> str:
    return "research" if rec_id.startswith("RR") else rec_id.rsplit(".", 1)[0]


def metrics(results: list) -> dict:
    answerable = [r for r in results if r["expected"]]
    multi = [r for r in answerable if len(r["turns"]) > 1]
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
        "multi_turn_items": len(multi),
        "multi_turn_top1": (sum(r["rank"] == 1 for r in multi) / len(multi)) if multi else 1.0,
    }
    tags: dict = {}
    for r in results:
        for t in r["tags"]:
            tags.setdefault(t, []).append(r)
    out["by_tag"] = {t: {"n": len(rs), "correct": round(sum(r["correct"] for r in rs) / len(rs), 4)}
                     for t, rs in sorted(tags.items())}
    sections: dict = {}
    for r in results:
        sections.setdefault(r.get("section") or "?", []).append(r)
    out["by_section"] = {s: {"n": len(rs), "correct": round(sum(r["correct"] for r in rs) / len(rs), 4)}
                         for s, rs in sorted(sections.items())}
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def reliability(results: list, bins: int = 10) -> list:
    """Fused score of the best candidate against the share of items it would answer correctly (an out of
    scope item is never answered correctly): one row per score bin, for the reliability diagram."""
    rows = []
    scored = [r for r in results if isinstance(r.get("top_score"), (int, float))]
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [r for r in scored if lo <= r["top_score"] < hi or (b == bins - 1 and r["top_score"] == 1.0)]
        good = [r for r in inside if _right_if_answered(r)]
        rows.append({"lo": round(lo, 2), "hi": round(hi, 2), "n": len(inside),
                     "correct": round(len(good) / len(inside), 4) if inside else None})
    return rows


def _right_if_answered(r: dict) -> bool:
    """Would the item's best candidate be a right answer (its actual answer where it answered)?"""
    if not r["expected"]:
        return False
    return r["rank"] == 1 if not r["abstained"] else r.get("top_id") in r["expected"]


def threshold_sweep(results: list, thresholds=(0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)) -> list:
    """What abstaining below each fused-score threshold would do, from the items' best-candidate scores
    (a run without abstention ranks everything; out-of-scope concepts abstain whatever the score)."""
    rows = []
    scored = [r for r in results if isinstance(r.get("top_score"), (int, float))]
    for t in thresholds:
        abst = [r for r in scored if r["top_score"] < t or (r["abstained"] and r.get("reason", "") and
                                                              str(r["reason"]).startswith("out_of_scope"))]
        answerable = [r for r in scored if r["expected"]]
        oos = [r for r in scored if not r["expected"]]
        kept_right = [r for r in answerable if r not in abst and _right_if_answered(r)]
        rows.append({"threshold": t,
                     "top1": round(len(kept_right) / len(answerable), 4) if answerable else None,
                     "abstention_precision": (round(sum(not r["expected"] for r in abst) / len(abst), 4)
                                              if abst else 1.0),
                     "abstention_recall": round(sum(r in abst for r in oos) / len(oos), 4) if oos else 1.0})
    return rows


def confusions(results: list, top: int = 15) -> list:
    """Most frequent (expected -> predicted) pairs among the misses."""
    pairs: dict = {}
    for r in results:
        if r["correct"]:
            continue
        expected = "/".join(r["expected"]) if r["expected"] else "abstain"
        got = "abstain" if r["abstained"] or not r["predicted"] else r["predicted"][0]
        pairs[(expected, got)] = pairs.get((expected, got), 0) + 1
    return [{"expected": e, "predicted": p, "n": n}
            for (e, p), n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]


def compare(old: dict, new: dict) -> dict:
    """Items fixed and broken between two evaluation results (JSON written by --json)."""
    before = {i["id"]: i for i in old["items"]}
    fixed, broken = [], []
    for item in new["items"]:
        was = before.get(item["id"])
        if was is None or was["correct"] == item["correct"]:
            continue
        (fixed if item["correct"] else broken).append({"id": item["id"], "turns": item["turns"],
                                                       "expected": item["expected"],
                                                       "before": _outcome(was), "after": _outcome(item)})
    return {"fixed": fixed, "broken": broken,
            "metrics": {k: (old["metrics"].get(k), new["metrics"].get(k)) for k in METRIC_NAMES}}


def _outcome(item: dict) -> str:
    return "abstain" if item["abstained"] else ", ".join(item["predicted"][:3])


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
