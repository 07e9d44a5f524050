"""Parse the CG81 text (as extracted from its PDF) into one record per recommendation.

The parser is strict on purpose: a clinician is shown these records verbatim, so a source with a
missing, duplicated or out-of-order ID, or a recommendation without its year tag, is refused with
a clear error and nothing is written.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from assistant import config

PARSER_VERSION = "2"

_FURNITURE = [
    re.compile(r"^Advanced breast cancer: diagnosis and treatment \(CG81\)$"),
    re.compile(r"^© NICE \d{4}\. All rights reserved\..*$"),
    re.compile(r"^conditions#notice-of-rights\)\.$"),
    re.compile(r"^Page \d+$"),
    re.compile(r"^of \d+$"),
]
_SECTION = re.compile(r"^(1\.[1-9]) (\S.*)$")
_REC = re.compile(r"^(1\.[1-9]\.\d{1,2}) (\S.*)$")
_YEAR = re.compile(r"\[(\d{4})\]\s*$")
_RESEARCH_START = "Recommendations for research"
_RESEARCH_HEAD = re.compile(r"^([1-9]) ([A-Z].*)$")
_RESEARCH_END = "Context"
_WHY = "Why this is important"
EXPECTED_IDS = (
    [f"1.1.{i}" for i in range(1, 9)]
    + [f"1.2.{i}" for i in range(1, 5)]
    + [f"1.3.{i}" for i in range(1, 13)]
    + ["1.4.1"]
    + [f"1.5.{i}" for i in range(1, 22)]
)
EXPECTED_RESEARCH_IDS = [f"RR{i}" for i in range(1, 7)]


class CorpusError(ValueError):
    """The source cannot be turned into a trustworthy corpus."""


@dataclass
class Record:
    id: str
    kind: str
    section: str
    section_title: str
    subsection: str | None
    text: str
    year: int
    strength: str
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("extra")
        data.update(self.extra)
        return data


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return sha256_bytes(text.encode("utf-8"))


def _clean_lines(raw: str) -> list[str]:
    lines = []
    for line in raw.splitlines():
        stripped = " ".join(line.split())
        if any(p.match(stripped) for p in _FURNITURE):
            continue
        lines.append(stripped)
    return lines


def join_lines(lines: list[str]) -> str:
    """Join PDF lines into text: bullets start a new line, a word hyphenated at a break is rejoined."""
    out = ""
    for line in lines:
        if not line:
            continue
        if line.startswith("•"):
            out += "\n• " + line[1:].strip()
        elif not out:
            out = line
        elif re.search(r"[A-Za-z]-$", out):
            out += line
        else:
            out += " " + line
    return out.strip()


def strength_of(text: str) -> str:
    """NICE wording → strength, read from the directive that opens the first sentence (or follows
    its leading clause: "On recurrence, consider ..."): 'Do not' → do not; 'Consider' → consider;
    'Offer' or 'should be offered' → offer; anything else ('Assess', 'Use', 'Provide', '... should
    assess') → other. Research recommendations are 'other'."""
    first = re.split(r"(?<=[.:])\s", text, maxsplit=1)[0].lower()
    if first.startswith("do not"):
        return "do not"
    if re.match(r"(consider\b|[^.]*?,\s*consider\b)", first):
        return "consider"
    if re.match(r"(offer\b|[^.]*?,\s*offer\b|[^.]*\bshould be offered\b)", first):
        return "offer"
    return "other"


def _take_year(text: str, rec_id: str) -> tuple[str, int]:
    match = _YEAR.search(text)
    if not match:
        raise CorpusError(f"recommendation {rec_id} has no year tag such as [2009]")
    return text[: match.start()].rstrip(), int(match.group(1))


def _check_sequence(ids: list[str], expected: list[str], what: str) -> None:
    seen = set()
    for rec_id in ids:
        if rec_id in seen:
            raise CorpusError(f"{what} {rec_id} is duplicated")
        seen.add(rec_id)
    missing = [i for i in expected if i not in seen]
    if missing:
        raise CorpusError(f"{what} missing: {', '.join(missing)}")
    unexpected = [i for i in ids if i not in expected]
    if unexpected:
        raise CorpusError(f"unexpected {what} {', '.join(unexpected)}")
    if ids != expected:
        bad = next(a for a, b in zip(ids, expected) if a != b)
        raise CorpusError(f"{what} {bad} is out of order")


def _parse_recommendations(lines: list[str]) -> list[Record]:
    records: list[Record] = []
    section = title = None
    subsection: str | None = None
    current: list[str] | None = None
    current_id = ""
    pending: list[str] = []  # lines between a closed recommendation and the next start
    title_open = False

    def close() -> None:
        nonlocal current
        if current is None:
            return
        body, year = _take_year(join_lines(current), current_id)
        records.append(
            Record(current_id, "recommendation", section or "", title or "", subsection, body, year,
                   strength_of(body))
        )
        current = None

    def flush_pending() -> None:
        nonlocal subsection, pending
        block = [p for p in pending if p]
        # A heading is one short line without a full stop; anything longer is a section note.
        if len(block) == 1 and len(block[0].split()) <= 6 and not block[0].endswith("."):
            subsection = block[0]
        pending = []

    for line in lines:
        rec = _REC.match(line)
        sec = _SECTION.match(line) if not rec else None
        if rec:
            if current is not None:
                if not _YEAR.search(join_lines(current)):
                    raise CorpusError(f"recommendation {current_id} has no year tag such as [2009]")
                close()
            flush_pending()
            title_open = False
            current_id, current = rec.group(1), [rec.group(2)]
        elif sec:
            if current is not None:
                close()
            pending = []
            section, title, subsection = sec.group(1), sec.group(2), None
            title_open = True
        elif title_open and line and line[0].islower():
            title = f"{title} {line}"
        elif current is not None:
            current.append(line)
            if _YEAR.search(line):
                close()
        else:
            title_open = title_open and not line
            pending.append(line)
    if current is not None:
        close()
    return records


def _parse_research(lines: list[str]) -> list[Record]:
    records: list[Record] = []
    head: list[str] | None = None
    rec_id = ""
    body: list[str] = []

    def close() -> None:
        if head is None:
            return
        text = join_lines(body)
        text, year = _take_year(text, rec_id)
        if _WHY not in text:
            raise CorpusError(f"research recommendation {rec_id} lacks '{_WHY}'")
        question, why = (part.strip() for part in text.split(_WHY, 1))
        full = f"{question}\n{_WHY}\n{why}"
        records.append(
            Record(rec_id, "research", "RR", "Recommendations for research", " ".join(head), full,
                   year, "other", {"question": question, "why_important": why})
        )

    for line in lines:
        match = _RESEARCH_HEAD.match(line)
        if match and (head is None or _YEAR.search(join_lines(body))):
            close()
            rec_id, head, body = f"RR{match.group(1)}", [match.group(2)], []
        elif head is not None and not body and head[-1].count("(") > head[-1].count(")"):
            head.append(line)
        elif head is not None:
            body.append(line)
    close()
    return records


def parse(raw: str) -> list[Record]:
    lines = _clean_lines(raw)
    try:
        start = next(i for i, ln in enumerate(lines) if _SECTION.match(ln))
        research = lines.index(_RESEARCH_START, start)
        end = lines.index(_RESEARCH_END, research)
    except (StopIteration, ValueError) as exc:
        raise CorpusError("source does not look like CG81: sections or research part not found") from exc
    recs = _parse_recommendations(lines[start:research])
    _check_sequence([r.id for r in recs], EXPECTED_IDS, "recommendation")
    research_recs = _parse_research(lines[research + 1 : end])
    _check_sequence([r.id for r in research_recs], EXPECTED_RESEARCH_IDS, "research recommendation")
    return recs + research_recs


_UPDATE_START = "Update information"
_UPDATE_END = "Minor changes since publication"
_UPDATE_NOTE = re.compile(r"^(January|February|March|April|May|June|July|August|September|October|November|"
                          r"December) (\d{4}): ")
_TAG_MEANING = re.compile(r"^\[(\d{4})\] indicates ")


def parse_updates(raw: str) -> dict:
    """The guideline's own 'Update information': what each update changed and what each year tag
    means, verbatim, keyed by year (answers to "what changed in 2017?" quote these)."""
    lines = _clean_lines(raw)
    try:
        start = lines.index(_UPDATE_START)
        end = lines.index(_UPDATE_END, start)
    except ValueError as exc:
        raise CorpusError("source has no 'Update information' section") from exc
    paragraphs, current = [], []
    for line in lines[start + 1: end] + [""]:
        if line:
            current.append(line)
        elif current:
            paragraphs.append(join_lines(current))
            current = []
    notes, tags = {}, {}
    for para in paragraphs:
        note, tag = _UPDATE_NOTE.match(para), _TAG_MEANING.match(para)
        if note:
            notes[note.group(2)] = para
        elif tag:
            tags[tag.group(1)] = para
    return {"notes": notes, "tags": tags}


def render_jsonl(records: list[Record]) -> str:
    return "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in records)


def build(source: Path | None = None, out: Path | None = None) -> list[Record]:
    """Parse the source and write the corpus and its provenance; nothing is written on error."""
    source = source or config.SOURCE_PATH
    out = out or config.CORPUS_PATH
    raw = source.read_text(encoding="utf-8")
    records = parse(raw)
    body = render_jsonl(records)
    out.write_text(body, encoding="utf-8")
    updates = parse_updates(raw)
    years = {str(r.year) for r in records}
    if set(updates["tags"]) != years:
        raise CorpusError(f"year tags {sorted(years)} do not match the update information {sorted(updates['tags'])}")
    meta = {"source": source.name, "source_sha256": sha256_text(raw), "parser_version": PARSER_VERSION,
            "corpus_sha256": sha256_text(body), "records": len(records), "update_information": updates}
    out.with_suffix(".meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return records


def load_meta(path: Path | None = None) -> dict:
    """The provenance written beside the corpus (source and corpus hashes, parser, update information)."""
    meta_path = (path or config.CORPUS_PATH).with_suffix(".meta.json")
    return json.loads(meta_path.read_text(encoding="utf-8"))


def load_updates(path: Path | None = None) -> dict:
    """The update information recorded beside the corpus (see parse_updates)."""
    return load_meta(path).get("update_information") or {"notes": {}, "tags": {}}


def load(path: Path | None = None, source: Path | None = None) -> list[dict]:
    """Load the parsed corpus, refusing it when it no longer matches its source or parser."""
    path = path or config.CORPUS_PATH
    source = source or config.SOURCE_PATH
    meta_path = path.with_suffix(".meta.json")
    if not path.exists() or not meta_path.exists():
        raise CorpusError(f"{path} is missing: run `python -m assistant build`")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    body = path.read_text(encoding="utf-8")
    stale = (
        meta.get("parser_version") != PARSER_VERSION
        or meta.get("corpus_sha256") != sha256_text(body)
        or (source.exists() and meta.get("source_sha256") != sha256_text(source.read_text(encoding="utf-8")))
    )
    if stale:
        raise CorpusError(f"{path} is stale (source, parser or file changed): run `python -m assistant build`")
    return [json.loads(line) for line in body.splitlines() if line.strip()]
