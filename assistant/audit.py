"""The audit trail a clinical safety officer reviews (DCB0129/DCB0160): one append-only record per turn.

Each record: time, channel, a pseudonymous user ID and conversation ID (keyed hashes, key from
CG81_AUDIT_KEY), the question with identifiers redacted, the answer IDs in order, whether and why it
abstained, the clarification asked, the corpus SHA-256 and index/model versions the answer came from, and
the latency. Feedback is appended as its own record pointing at the turn. The store lives in the same
database as the conversations (TRACKER_STORE_URL: SQLite by default, PostgreSQL in deployments); triggers
refuse UPDATE and DELETE, so the trail cannot be edited through the database either.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import logging
import os
import secrets
import uuid
from datetime import datetime, timezone

import sqlalchemy as sa

log = logging.getLogger(__name__)
KEY_ENV = "CG81_AUDIT_KEY"
URL_ENV = "TRACKER_STORE_URL"

_meta = sa.MetaData()
TURNS = sa.Table(
    "audit_turns", _meta,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("turn_id", sa.String(36), nullable=False, unique=True),   # the channel's turn ID where it has one
    sa.Column("ts", sa.String(32), nullable=False, index=True),          # ISO 8601, UTC
    sa.Column("channel", sa.String(32), nullable=False),
    sa.Column("user_id", sa.String(32), nullable=False),                 # keyed hash
    sa.Column("conversation_id", sa.String(32), nullable=False),         # keyed hash
    sa.Column("question", sa.Text, nullable=False),                      # identifiers redacted
    sa.Column("identifiers_removed", sa.String(128), nullable=False, default=""),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("answer_ids", sa.String(512), nullable=False, default=""),  # comma-separated, in order
    sa.Column("abstained", sa.Boolean, nullable=False),
    sa.Column("reason", sa.String(128)),
    sa.Column("clarification", sa.Text),
    sa.Column("corpus_sha256", sa.String(64)),
    sa.Column("index_version", sa.String(64)),
    sa.Column("model", sa.String(128)),
    sa.Column("latency_ms", sa.Float, nullable=False),
)
FEEDBACK = sa.Table(
    "audit_feedback", _meta,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("turn_id", sa.String(36), nullable=False, index=True),
    sa.Column("ts", sa.String(32), nullable=False),
    sa.Column("value", sa.String(8), nullable=False),                    # up | down
    sa.Column("answer_ids", sa.String(512), nullable=False, default=""),
)
_APPEND_ONLY = {
    "sqlite": ["CREATE TRIGGER IF NOT EXISTS {t}_no_update BEFORE UPDATE ON {t} BEGIN "
               "SELECT RAISE(ABORT, 'the audit trail is append-only'); END",
               "CREATE TRIGGER IF NOT EXISTS {t}_no_delete BEFORE DELETE ON {t} BEGIN "
               "SELECT RAISE(ABORT, 'the audit trail is append-only'); END"],
    "postgresql": ["CREATE OR REPLACE FUNCTION cg81_audit_append_only() RETURNS trigger AS $$ BEGIN "
                   "RAISE EXCEPTION 'the audit trail is append-only'; END; $$ LANGUAGE plpgsql",
                   "DROP TRIGGER IF EXISTS {t}_append_only ON {t}",
                   "CREATE TRIGGER {t}_append_only BEFORE UPDATE OR DELETE ON {t} "
                   "FOR EACH ROW EXECUTE FUNCTION cg81_audit_append_only()"],
}
QUESTION_CHARS = 2000   # an over-long message is refused, and kept only this far for the review
EXPORT_COLUMNS = [c.name for c in TURNS.columns if c.name != "seq"] + ["feedback"]


class AuditError(RuntimeError):
    """The audit store cannot be used (bad URL, unreachable database)."""


def default_url() -> str:
    """The tracker store's database, read as the Rasa server reads it (TRACKER_STORE_URL, or the
    TRACKER_DB_* settings, or the default SQLite file)."""
    from assistant.rasa.service_config import ConfigurationError, database_settings

    try:
        return database_settings().url
    except ConfigurationError as exc:
        raise AuditError(str(exc)) from exc


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Pseudonymiser:
    """Keyed hash (HMAC-SHA256) of user and conversation IDs: stable for one key, not reversible, and not
    linkable to the platform's IDs without the key."""

    def __init__(self, key: str | None = None) -> None:
        key = key if key is not None else os.environ.get(KEY_ENV)
        if not key:
            log.warning("%s is not set: audit pseudonyms use a random per-process key (set it in deployments "
                        "so that pseudonyms stay stable across restarts and replicas)", KEY_ENV)
            key = secrets.token_hex(32)
        self._key = key.encode("utf-8")

    def __call__(self, value: str) -> str:
        return hmac.new(self._key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


class AuditStore:
    def __init__(self, url: str | None = None, key: str | None = None) -> None:
        self.url = url or default_url()
        if self.url.startswith("sqlite:///"):
            from pathlib import Path

            Path(self.url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine = sa.create_engine(self.url, future=True, pool_pre_ping=True)
            _meta.create_all(self.engine)
            dialect = self.engine.dialect.name
            with self.engine.begin() as conn:
                for table in (TURNS.name, FEEDBACK.name):
                    for stmt in _APPEND_ONLY.get(dialect, []):
                        conn.exec_driver_sql(stmt.format(t=table))
        except (sa.exc.SQLAlchemyError, ImportError, ValueError) as exc:
            raise AuditError(f"audit store at {URL_ENV} cannot be used: {type(exc).__name__}") from exc
        self.pseudonym = Pseudonymiser(key)

    # ------------------------------------------------------------------ writing
    def record_turn(self, *, channel: str, user: str, conversation: str, question: str, payload: dict | None,
                    latency_ms: float, identifiers: tuple = (), kind: str | None = None,
                    turn_id: str | None = None) -> str:
        """Append one turn; `question` must already be redacted. Returns the turn ID (for feedback)."""
        payload = payload or {}
        answers = payload.get("answers") or []
        clar = payload.get("clarification") or {}
        prov = payload.get("provenance") or {}
        turn_id = turn_id or str(uuid.uuid4())
        row = {"turn_id": turn_id, "ts": _now(), "channel": channel[:32], "user_id": self.pseudonym(user),
               "conversation_id": self.pseudonym(conversation), "question": question[:QUESTION_CHARS],
               "identifiers_removed": ",".join(identifiers),
               "kind": kind or _kind(payload), "answer_ids": ",".join(a["id"] for a in answers),
               "abstained": bool(payload.get("abstained")) if payload else False,
               "reason": payload.get("reason"), "clarification": clar.get("question"),
               "corpus_sha256": prov.get("corpus_sha256"), "index_version": prov.get("index"),
               "model": prov.get("model"), "latency_ms": round(float(latency_ms), 1)}
        with self.engine.begin() as conn:
            conn.execute(TURNS.insert(), row)
        return turn_id

    def record_feedback(self, turn_id: str, value: str, answer_ids: list | None = None) -> None:
        if value not in ("up", "down"):
            raise ValueError("feedback is 'up' or 'down'")
        with self.engine.begin() as conn:
            conn.execute(FEEDBACK.insert(), {"turn_id": turn_id, "ts": _now(), "value": value,
                                             "answer_ids": ",".join(answer_ids or [])})

    # ------------------------------------------------------------------ reading
    def turns(self, since: str | None = None) -> list:
        """Every turn (oldest first) with the latest feedback given on it."""
        query = sa.select(TURNS).order_by(TURNS.c.seq)
        if since:
            query = query.where(TURNS.c.ts >= since)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
            feedback = {r.turn_id: r.value for r in conn.execute(sa.select(FEEDBACK).order_by(FEEDBACK.c.seq))}
        for r in rows:
            r.pop("seq", None)
            r["feedback"] = feedback.get(r["turn_id"])
        return rows

    def export(self, since: str | None = None, fmt: str = "csv") -> str:
        rows = self.turns(since)
        if fmt == "json":
            return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()

    def summary(self, since: str | None = None) -> dict:
        """For the safety officer: answers per recommendation, abstention rate and reasons, clarification
        rate and feedback, overall and by day."""
        return summarise(self.turns(since))


def _kind(payload: dict) -> str:
    if not payload:
        return "other"
    if payload.get("clarification"):
        return "clarify"
    return "abstain" if payload.get("abstained") else "answer"


def summarise(rows: list) -> dict:
    def block(rs: list) -> dict:
        guideline = [r for r in rs if r["kind"] in ("answer", "clarify", "abstain", "list", "lookup")]
        abstained = [r for r in guideline if r["abstained"]]
        per_rec: dict = {}
        for r in guideline:
            if r["kind"] in ("answer", "lookup") and r["answer_ids"]:
                first = r["answer_ids"].split(",")[0]
                per_rec[first] = per_rec.get(first, 0) + 1
        reasons: dict = {}
        for r in abstained:
            reasons[r["reason"] or "?"] = reasons.get(r["reason"] or "?", 0) + 1
        fb = [r["feedback"] for r in rs if r["feedback"]]
        n = len(guideline)
        return {"turns": len(rs), "guideline_turns": n,
                "answers_per_recommendation": dict(sorted(per_rec.items(), key=lambda kv: (-kv[1], kv[0]))),
                "abstention_rate": round(len(abstained) / n, 4) if n else 0.0,
                "abstention_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
                "clarification_rate": round(sum(r["kind"] == "clarify" for r in guideline) / n, 4) if n else 0.0,
                "feedback": {"up": fb.count("up"), "down": fb.count("down")},
                "identifiers_removed": sum(bool(r["identifiers_removed"]) for r in rs)}

    days: dict = {}
    for r in rows:
        days.setdefault(r["ts"][:10], []).append(r)
    return {"overall": block(rows), "by_day": {d: block(rs) for d, rs in sorted(days.items())}}
