"""Clinicians' thumbs-up answers as candidate gold items, for review before they join a gold set.

    .venv/bin/python scripts/export_feedback.py [--feedback var/feedback.jsonl] > candidates.yaml

Writes YAML in the tests/gold format (version, guideline, items with turns / expected / tags) to stdout:
a turn whose answers got thumbs up expects those IDs (in the assistant's ranking order); a thumbs-up on
an abstention becomes an out-of-scope item (expected: []). Thumbs-down turns are listed as comments at the
end: they say what was wrong, not what is right, so a person writes their expected answer. Reads
CG81_FEEDBACK_PATH when --feedback is not given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assistant import feedback  # noqa: E402


def _flow(values: list) -> str:
    """A YAML flow list of double-quoted strings (JSON strings are valid YAML), as tests/gold writes them."""
    return "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in values) + "]"


def to_yaml(items: list, rejected: list) -> str:
    """The gold files' own layout, so that reviewed items can be pasted into them as they are."""
    lines = ["version: 1", "guideline: CG81"]
    if not items:
        lines += ["# no thumbs-up feedback yet: nothing to propose", "items: []"]
    else:
        lines.append("items:")
        for item in items:
            lines += [f"  - id: {item['id']}", f"    turns: {_flow(item['turns'])}",
                      f"    expected: {_flow(item['expected'])}", f"    tags: [{', '.join(item['tags'])}]"]
    if rejected:
        lines.append("# Thumbs down (write the expected answer by hand if the question belongs in a gold set):")
        for r in rejected:
            lines.append(f"#   {r['id']}: {_flow(r['turns'])} was answered {', '.join(r['answered']) or '(abstained)'};"
                         f" thumbs down on {', '.join(r['thumbs_down'])}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--feedback", type=Path, help="feedback JSON-lines file (default: CG81_FEEDBACK_PATH or "
                        "var/feedback.jsonl)")
    args = parser.parse_args(argv)
    records = feedback.load(args.feedback)
    items, rejected = feedback.gold_items(records)
    sys.stdout.write(to_yaml(items, rejected))
    print(f"export_feedback: {len(records)} records -> {len(items)} candidate items, {len(rejected)} thumbs-down "
          "turns", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
