"""Feedback records (assistant/feedback.py) and their export as candidate gold items (scripts/export_feedback.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest
import yaml

from assistant import answer, config, corpus, feedback

pytestmark = pytest.mark.portable
RECORDS = {r["id"]: r for r in corpus.load()}


def payload(*ids):
    return answer.payload([answer.answer_item(RECORDS[i], 0.5) for i in ids])


def entry(conv, turn, value, rec_ids, turns, pay):
    return feedback.record(conv, turn, value, rec_ids, turns, pay)


def test_records_append_as_json_lines_and_load_back(tmp_path):
    target = tmp_path / "var" / "feedback.jsonl"
    first = entry("web-a", "t1", "up", ["1.3.4"], ["ER+ postmenopausal first line?"], payload("1.3.4", "1.3.1"))
    feedback.append(first, target)
    feedback.append(entry("web-a", "t2", "down", [], ["dose?"], answer.abstention_payload("oos")), target)
    with target.open("a") as f:
        f.write("{torn line\n")
    loaded = feedback.load(target)
    assert [r["turn_id"] for r in loaded] == ["t1", "t2"]
    assert loaded[0] == first and loaded[0]["answer_ids"] == ["1.3.4", "1.3.1"]
    assert loaded[1]["abstained"] is True and loaded[1]["reason"] == "oos"
    assert oct(target.stat().st_mode & 0o777) == "0o600"  # the review record holds questions: owner only
    assert feedback.load(tmp_path / "missing.jsonl") == []


def test_thumbs_up_become_gold_items_and_the_last_verdict_wins():
    records = [
        entry("web-aaaaaa", "t1", "up", ["1.3.1"], ["q1"], payload("1.3.4", "1.3.1")),
        entry("web-aaaaaa", "t1", "up", ["1.3.4"], ["q1"], payload("1.3.4", "1.3.1")),
        entry("web-aaaaaa", "t2", "up", ["1.3.7"], ["q1", "and for men?"], payload("1.3.7")),
        entry("web-aaaaaa", "t2", "down", ["1.3.7"], ["q1", "and for men?"], payload("1.3.7")),  # changed mind
        entry("web-bbbbbb", "t3", "up", [], ["what dose?"], answer.abstention_payload("out_of_scope:oos_dosing")),
    ]
    items, rejected = feedback.gold_items(records)
    assert [(i["turns"], i["expected"]) for i in items] == [(["q1"], ["1.3.4", "1.3.1"]), (["what dose?"], [])]
    assert "out_of_scope" in items[1]["tags"] and "feedback" in items[0]["tags"]
    assert [(r["turns"], r["thumbs_down"]) for r in rejected] == [(["q1", "and for men?"], ["1.3.7"])]


def test_export_script_writes_schema_valid_gold_yaml(tmp_path):
    target = tmp_path / "feedback.jsonl"
    feedback.append(entry("web-cccccc", "t1", "up", ["1.1.8"], ['PET-CT "monitoring"? — ok'], payload("1.1.8")),
                    target)
    feedback.append(entry("web-cccccc", "t2", "down", ["1.1.1"], ["x"], payload("1.1.1")), target)
    out = subprocess.run([sys.executable, "scripts/export_feedback.py", "--feedback", str(target)], cwd=config.ROOT,
                         capture_output=True, text=True, check=True)
    doc = yaml.safe_load(out.stdout)
    schema = json.loads((config.ROOT / "tests" / "gold" / "gold.schema.json").read_text())
    jsonschema.validate(doc, schema)
    assert doc["items"] == [{"id": "fb001-cccccc", "turns": ['PET-CT "monitoring"? — ok'], "expected": ["1.1.8"],
                             "tags": ["feedback", "web"]}]
    assert "# Thumbs down" in out.stdout and "1 candidate items" in out.stderr
    empty = subprocess.run([sys.executable, "scripts/export_feedback.py", "--feedback", str(tmp_path / "none")],
                           cwd=config.ROOT, capture_output=True, text=True, check=True)
    jsonschema.validate(yaml.safe_load(empty.stdout), {**schema, "properties": {**schema["properties"],
                                                                              "items": {"type": "array"}}})
