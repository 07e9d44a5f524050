"""Gold-set evaluation: metrics by hand, gold-file validation, regression floors, and the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from assistant import config, corpus, evaluate
from assistant.evaluate import GoldError, check_floor, load_gold, metrics, score

portable = pytest.mark.portable


def _r(expected, rank, abstained, exact=True, tags=()):
    correct = abstained if not expected else rank == 1
    return {"id": f"x{len(expected)}{rank}{abstained}", "turns": ["q"], "expected": expected,
            "predicted": [], "abstained": abstained, "correct": correct, "rank": rank, "exact_text": exact,
            "tags": list(tags)}


# Four answerable items (ranks 1, 2, 3 and abstained) and two out of scope (one abstained, one answered).
RESULTS = [
    _r(["1.1.8"], 1, False, tags=["imaging"]),
    _r(["1.3.4"], 2, False, tags=["endocrine"]),
    _r(["1.5.4"], None, True, tags=["endocrine"]),
    _r(["1.5.16"], 3, False, exact=False),
    _r([], None, True, tags=["oos"]),
    _r([], None, False, tags=["oos"]),
]


# ---------------------------------------------------------------- metrics (pure)
@portable
def test_metrics_by_hand():
    m = metrics(RESULTS)
    assert (m["items"], m["answerable"], m["out_of_scope"]) == (6, 4, 2)
    assert m["top1"] == 0.25                      # 1 of 4
    assert m["recall_at_3"] == 0.75               # ranks 1, 2, 3
    assert m["mrr"] == round((1 + 1 / 2 + 1 / 3) / 4, 4) == 0.4583
    assert m["abstention_precision"] == 0.5       # abstained on 2, one of them answerable
    assert m["abstention_recall"] == 0.5          # 1 of the 2 out-of-scope items
    assert m["exact_text"] == round(5 / 6, 4)
    assert m["by_tag"] == {"endocrine": {"n": 2, "correct": 0.0}, "imaging": {"n": 1, "correct": 1.0},
                           "oos": {"n": 2, "correct": 0.5}}


@portable
def test_metrics_perfect_and_empty():
    perfect = metrics([_r(["1.1.8"], 1, False), _r([], None, True)])
    assert {k: perfect[k] for k in evaluate.METRIC_NAMES} == dict.fromkeys(evaluate.METRIC_NAMES, 1.0)
    empty = metrics([])
    assert (empty["items"], empty["top1"], empty["exact_text"], empty["by_tag"]) == (0, 0.0, 0.0, {})
    # nothing abstained / nothing out of scope: no division by zero, nothing to blame
    assert metrics([_r(["1.1.8"], 1, False)])["abstention_precision"] == 1.0
    assert metrics([_r(["1.1.8"], 1, False)])["abstention_recall"] == 1.0


@portable
def test_score_from_payloads():
    by_id = {"1.1.8": {"text": "Do not use PET-CT."}, "1.1.5": {"text": "PET-CT only for diagnosis."}}
    items = [
        {"id": "a", "turns": ["q"], "expected": ["1.1.8"], "tags": ["t"]},
        {"id": "b", "turns": ["q"], "expected": ["1.1.8"]},
        {"id": "c", "turns": ["q"], "expected": []},
        {"id": "d", "turns": ["q"], "expected": ["1.1.5", "1.1.8"]},
    ]
    payloads = [
        {"abstained": False, "answers": [{"id": "1.1.8", "text": "Do not use PET-CT."}]},
        {"abstained": False, "answers": [{"id": "1.1.5", "text": "PET-CT only for diagnosis."},
                                         {"id": "1.1.8", "text": "Do not use PET-CT!"}]},
        {"abstained": True, "answers": [], "reason": "out_of_scope:oos_dosing"},
        {"abstained": False, "answers": [{"id": "1.1.8", "text": "Do not use PET-CT."}]},
    ]
    result = score(items, payloads, by_id)
    a, b, c, d = result["items"]
    assert (a["rank"], a["correct"], a["exact_text"], a["predicted"]) == (1, True, True, ["1.1.8"])
    assert (b["rank"], b["correct"], b["exact_text"]) == (2, False, False)   # altered text is caught
    assert (c["abstained"], c["correct"], c["rank"], c["reason"]) == (True, True, None, "out_of_scope:oos_dosing")
    assert (d["rank"], d["correct"]) == (1, True)                           # any expected ID counts
    assert result["metrics"]["top1"] == round(2 / 3, 4)
    assert result["metrics"]["exact_text"] == 0.75


@portable
def test_score_counts_an_empty_answer_list_as_abstention():
    result = score([{"id": "a", "turns": ["q"], "expected": ["1.1.8"]}], [{"answers": []}], {})
    assert result["items"][0]["abstained"] is True and result["items"][0]["rank"] is None


@portable
def test_check_floor():
    m = {"top1": 0.9, "mrr": 0.95, "exact_text": 1.0}
    assert check_floor(m, {"top1": 0.9, "mrr": 0.9, "exact_text": 1.0}) == []
    assert check_floor(m, {"top1": 0.92}) == ["top1 = 0.9 < 0.92"]
    assert check_floor(m, {"recall_at_3": 0.5}) == ["recall_at_3 = None < 0.5"]   # a missing metric fails
    assert check_floor(m, {}) == []


@portable
def test_report_lists_misses():
    result = {"metrics": metrics(RESULTS), "items": RESULTS}
    md = evaluate.report_markdown(result, "Test run")
    assert md.startswith("# Test run\n")
    assert "| top1 | 0.25 |" in md
    assert "## Misses (4)" in md


# ---------------------------------------------------------------- gold files
GOOD_GOLD = {"version": 1, "guideline": "CG81", "items": [
    {"id": "g1", "turns": ["should I monitor with PET-CT?"], "expected": ["1.1.8"], "tags": ["imaging"]},
    {"id": "g2", "turns": [POST := "endocrine therapy for a postmenopausal woman with ER+ advanced breast cancer",
                           "and for men?"], "expected": ["1.3.7"], "tags": ["follow_up"]},
    {"id": "g3", "turns": ["what dose of letrozole?"], "expected": [], "tags": ["out_of_scope"]},
    {"id": "g4", "turns": ["show 1.5.16"], "expected": ["1.5.16"]},
    {"id": "g5", "turns": ["research recommendation 4"], "expected": ["RR4"]},
]}


def _gold(tmp_path, data, name="gold.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


@portable
def test_load_gold(tmp_path):
    items = load_gold(_gold(tmp_path, GOOD_GOLD))
    assert [i["id"] for i in items] == ["g1", "g2", "g3", "g4", "g5"]
    assert items[1]["turns"][1] == "and for men?"


def _no_expected(d):
    del d["items"][0]["expected"]


def _bad_id(d):
    d["items"][0]["expected"] = ["1.6.1"]


def _bad_research_id(d):
    d["items"][0]["expected"] = ["RR7"]


def _dup_item(d):
    d["items"][1]["id"] = "g1"


def _no_turns(d):
    d["items"][0]["turns"] = []


def _unknown_key(d):
    d["items"][0]["answer"] = "1.1.8"


def _other_guideline(d):
    d["guideline"] = "CG80"


@portable
@pytest.mark.parametrize("mutate,message", [
    (_no_expected, r"items/0: 'expected' is a required property"),
    (_bad_id, r"items/0/expected/0: '1.6.1' does not match"),
    (_bad_research_id, r"'RR7' does not match"),
    (_dup_item, r"duplicated item ids"),
    (_no_turns, r"items/0/turns"),
    (_unknown_key, r"'answer' was unexpected"),
    (_other_guideline, r"guideline: 'CG81' was expected"),
], ids=lambda v: v.__name__.strip("_") if callable(v) else None)
def test_malformed_gold_is_refused(tmp_path, mutate, message):
    data = json.loads(json.dumps(GOOD_GOLD))
    mutate(data)
    with pytest.raises(GoldError, match=message):
        load_gold(_gold(tmp_path, data))


@portable
@pytest.mark.parametrize("name", sorted(p.name for p in (config.ROOT / "tests" / "gold").glob("*.yaml")))
def test_committed_gold_sets_are_valid_and_name_real_recommendations(name):
    items = load_gold(config.ROOT / "tests" / "gold" / name)
    known = {r["id"] for r in corpus.load()}
    assert items
    for item in items:
        assert set(item["expected"]) <= known, item["id"]
        assert all(t.strip() for t in item["turns"]), item["id"]


# ---------------------------------------------------------------- command line (real core)
def _cli(*args):
    return subprocess.Popen([sys.executable, "-m", "assistant", *args], cwd=config.ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory, retriever):
    """The three CLI runs, started together (each loads the model, so they overlap their start-up).
    `retriever` first: a stale index is rebuilt once here, not by three processes at the same time."""
    tmp = tmp_path_factory.mktemp("cli")
    gold = _gold(tmp, GOOD_GOLD)
    out = {"json": tmp / "out" / "result.json", "report": tmp / "out" / "report.md"}
    procs = {
        "eval": _cli("eval", "--gold", str(gold), "--json", str(out["json"]), "--report", str(out["report"]),
                     "--quiet", "--min", "top1=1.0", "--min", "exact_text=1.0"),
        "floor": _cli("eval", "--gold", str(gold), "--quiet", "--min", "top1=1.01"),
        "ask": _cli("ask", "should I monitor with PET-CT?", "--json"),
    }
    done = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        done[name] = (proc.returncode, stdout, stderr)
    return done, out


def test_cli_eval_writes_json_and_report(cli_runs, corpus_by_id):
    done, out = cli_runs
    rc, stdout, stderr = done["eval"]
    assert rc == 0, stderr
    assert "top1=1.0" in stdout
    result = json.loads(out["json"].read_text(encoding="utf-8"))
    m = result["metrics"]
    assert (m["items"], m["answerable"], m["out_of_scope"]) == (5, 4, 1)
    assert m["top1"] == 1.0 and m["abstention_recall"] == 1.0 and m["exact_text"] == 1.0
    by_item = {i["id"]: i for i in result["items"]}
    assert set(by_item) == {"g1", "g2", "g3", "g4", "g5"}
    for item in result["items"]:
        assert {"id", "expected", "predicted", "abstained"} <= set(item)
        assert all(p in corpus_by_id for p in item["predicted"])
    assert by_item["g1"]["predicted"][0] == "1.1.8" and by_item["g1"]["abstained"] is False
    assert by_item["g2"]["predicted"][0] == "1.3.7"
    assert by_item["g3"]["abstained"] is True and by_item["g3"]["predicted"] == []
    assert by_item["g4"]["predicted"] == ["1.5.16"]
    assert by_item["g5"]["predicted"] == ["RR4"]
    report = out["report"].read_text(encoding="utf-8")
    assert report.startswith("# Evaluation of ")
    assert "| top1 | 1.0 |" in report and "## Misses (0)" in report


def test_cli_eval_below_floor_exits_1(cli_runs):
    rc, _, stderr = cli_runs[0]["floor"]
    assert rc == 1
    assert "BELOW FLOOR: top1 = 1.0 < 1.01" in stderr


def test_cli_ask_json(cli_runs, corpus_by_id):
    rc, stdout, stderr = cli_runs[0]["ask"]
    assert rc == 0, stderr
    data = json.loads(stdout)
    assert data["kind"] == "answer"
    first = data["payload"]["answers"][0]
    assert first["id"] == "1.1.8"
    assert first["text"] == corpus_by_id["1.1.8"]["text"]
    assert data["payload"]["type"] == "guideline_answer" and data["payload"]["abstained"] is False
    assert corpus_by_id["1.1.8"]["text"] in data["text"]


# ---------------------------------------------------------------- report, reliability, comparison
def _scored(expected, rank, abstained, top_score, top_id=None, turns=("q",), reason=None):
    r = _r(expected, rank, abstained)
    r.update(turns=list(turns), top_score=top_score, top_id=top_id, reason=reason,
             predicted=[] if abstained else [top_id],
             section=evaluate.section_of(expected[0]) if expected else "out of scope")
    return r


SCORED = [
    _scored(["1.1.8"], 1, False, 0.95, "1.1.8"),
    _scored(["1.3.4"], 2, False, 0.55, "1.3.1", turns=("a", "b")),
    _scored(["1.5.4"], None, True, 0.35, "1.5.4"),          # abstained, but its best candidate was right
    _scored([], None, True, 0.32, "1.2.1"),                 # out of scope, abstained on the score
    _scored([], None, True, 0.81, "1.3.4", reason="out_of_scope:oos_dosing"),
]


@portable
def test_multi_turn_metric_counts_only_conversations():
    m = metrics(SCORED)
    assert (m["multi_turn_items"], m["multi_turn_top1"]) == (1, 0.0)
    assert m["by_section"]["1.1"] == {"n": 1, "correct": 1.0}


@portable
def test_reliability_bins_share_of_right_best_candidates():
    rows = {(r["lo"], r["hi"]): r for r in evaluate.reliability(SCORED)}
    assert rows[(0.9, 1.0)] == {"lo": 0.9, "hi": 1.0, "n": 1, "correct": 1.0}
    assert rows[(0.3, 0.4)]["n"] == 2 and rows[(0.3, 0.4)]["correct"] == 0.5   # 1.5.4 right, the OOS item not
    assert rows[(0.5, 0.6)]["correct"] == 0.0
    assert rows[(0.0, 0.1)]["correct"] is None


@portable
def test_threshold_sweep():
    by_t = {r["threshold"]: r for r in evaluate.threshold_sweep(SCORED, thresholds=(0.3, 0.4))}
    # At 0.3 nothing answerable is dropped: 1.1.8 and 1.5.4 right, 1.3.4 wrong; the dosing item abstains.
    assert by_t[0.3] == {"threshold": 0.3, "top1": round(2 / 3, 4), "abstention_precision": 1.0,
                         "abstention_recall": 0.5}
    # At 0.4 the right 1.5.4 and the out-of-scope 0.32 item are below it.
    assert by_t[0.4] == {"threshold": 0.4, "top1": round(1 / 3, 4), "abstention_precision": round(2 / 3, 4),
                         "abstention_recall": 1.0}


@portable
def test_confusions_and_compare():
    assert evaluate.confusions(SCORED)[0] == {"expected": "1.3.4", "predicted": "1.3.1", "n": 1}
    old = {"metrics": metrics(SCORED), "items": SCORED}
    better = [dict(i) for i in SCORED]
    better[1].update(rank=1, correct=True, predicted=["1.3.4"])
    worse = dict(better[0], rank=None, abstained=True, correct=False)
    diff = evaluate.compare(old, {"metrics": metrics(better), "items": [worse] + better[1:]})
    assert [i["id"] for i in diff["fixed"]] == [SCORED[1]["id"]]
    assert [(i["id"], i["after"]) for i in diff["broken"]] == [(SCORED[0]["id"], "abstain")]
    assert diff["metrics"]["top1"] == (old["metrics"]["top1"], 0.6667)


@portable
def test_html_report_is_self_contained_and_escaped():
    from assistant import report_html

    items = [dict(SCORED[1], turns=["<script>alert(1)</script>", "and for men?"])] + SCORED[2:]
    page = report_html.render({"metrics": metrics(items), "items": items}, "Run <1>", 0.4, {"model": "m"})
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Run &lt;1&gt;" in page and "abstain below 0.4" in page
    assert page.count("<svg") == 3                                      # by tag, by section, reliability
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing fetched
    assert "and for men?" in page                                       # the whole conversation of a miss
