"""Command line: build, ask, chat, eval."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from assistant import config


def _assistant(**kwargs):
    from assistant.dialogue import Assistant
    from assistant.retrieval import Retriever

    return Assistant(Retriever.load(), **kwargs)


def cmd_build(args) -> int:
    from assistant import corpus
    from assistant.retrieval import Retriever

    t0 = time.perf_counter()
    records = corpus.build()
    retriever = Retriever.build()
    print(f"corpus: {len(records)} records → {config.CORPUS_PATH.relative_to(config.ROOT)}")
    print(f"index: {len(retriever.records)} vectors, dim {retriever.meta['dimension']}, "
          f"model {retriever.meta['model']['name']} → {config.INDEX_DIR} ({time.perf_counter() - t0:.1f}s)")
    return 0


def cmd_ask(args) -> int:
    reply = _assistant().respond(args.question)
    if args.json:
        print(json.dumps({"kind": reply.kind, "text": reply.text, "payload": reply.payload}, indent=2,
                         ensure_ascii=False))
    else:
        print(reply.text)
    return 0


def cmd_chat(args) -> int:
    assistant = _assistant()
    state: dict = {}
    print("CG81 guideline assistant (core, no Rasa). Ctrl-D or 'quit' to leave.")
    while True:
        try:
            line = input("you> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if line.strip().lower() in {"quit", "exit"}:
            return 0
        reply = assistant.respond(line, state)
        state = reply.state
        print(reply.text)
        if reply.buttons:
            print("options: " + " | ".join(b["title"] for b in reply.buttons))


def cmd_eval(args) -> int:
    from assistant import corpus, evaluate

    if args.compare:
        return _compare(*args.compare)
    if not args.gold:
        print("eval needs --gold FILE (or --compare OLD.json NEW.json)", file=sys.stderr)
        return 2
    items = evaluate.load_gold(args.gold)
    by_id = {r["id"]: r for r in corpus.load()}
    baselines = None
    if args.via == "rest":
        client = evaluate.RestClient(args.url)
        result = evaluate.evaluate(items, client.run, by_id, progress=not args.quiet)
    else:
        assistant = _assistant()
        result = evaluate.evaluate(items, lambda turns: evaluate.run_core(assistant, turns), by_id,
                                   progress=not args.quiet)
        if args.baselines:
            from assistant.dialogue import Assistant
            from assistant.retrieval import MODES

            baselines = {}
            for mode in MODES:
                ranker = Assistant(assistant.retriever, assistant.rules, mode=mode, abstain=False)
                answerable = [i for i in items if i["expected"]]
                res = evaluate.evaluate(answerable, lambda turns, bot=ranker: evaluate.run_core(bot, turns),
                                        by_id, progress=False)
                baselines[mode] = {k: res["metrics"][k] for k in ("top1", "recall_at_3", "mrr")}
            result["baselines"] = baselines
    m = result["metrics"]
    print(f"{args.gold} via {args.via}: " + ", ".join(f"{k}={m[k]}" for k in evaluate.METRIC_NAMES)
          + f" ({m['answerable']} answerable, {m['out_of_scope']} out of scope)")
    if baselines:
        for name, b in baselines.items():
            print(f"  ranking only, {name:6s}: top1={b['top1']} recall@3={b['recall_at_3']} mrr={b['mrr']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(evaluate.report_markdown(result, f"Evaluation of {args.gold} via {args.via}",
                                                              baselines), encoding="utf-8")
    if args.html:
        from assistant import report_html
        from assistant.retrieval import ABSTAIN_BELOW

        provenance = {"gold": Path(args.gold).name, "via": args.via,
                      "corpus": corpus.load_meta().get("corpus_sha256", "?")[:12]}
        Path(args.html).parent.mkdir(parents=True, exist_ok=True)
        Path(args.html).write_text(report_html.render(result, f"Evaluation of {Path(args.gold).name} via {args.via}",
                                                      ABSTAIN_BELOW, provenance, baselines), encoding="utf-8")
    failures = evaluate.check_floor(m, dict(args.min))
    if baselines and args.require_hybrid_best:
        for metric in ("top1", "mrr"):
            for name in ("bm25", "dense"):
                if baselines["hybrid"][metric] <= baselines[name][metric]:
                    failures.append(f"hybrid {metric} {baselines['hybrid'][metric]} does not beat {name} "
                                    f"{baselines[name][metric]}")
    for f in failures:
        print(f"BELOW FLOOR: {f}", file=sys.stderr)
    return 1 if failures else 0


def cmd_audit(args) -> int:
    """Read the audit trail (the same database as the conversations: TRACKER_STORE_URL)."""
    from assistant.audit import AuditError, AuditStore

    try:
        store = AuditStore(args.url)
    except AuditError as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return 2
    if args.action == "export":
        sys.stdout.write(store.export(args.since, args.format))
    else:
        print(json.dumps(store.summary(args.since), indent=2))
    return 0


def _compare(old_path: str, new_path: str) -> int:
    from assistant import evaluate

    old, new = (json.loads(Path(p).read_text(encoding="utf-8")) for p in (old_path, new_path))
    diff = evaluate.compare(old, new)
    for name, (a, b) in diff["metrics"].items():
        print(f"{name:22s} {a} -> {b}")
    for label in ("fixed", "broken"):
        print(f"\n{label} ({len(diff[label])}):")
        for item in diff[label]:
            print(f"  {item['id']}: {item['turns']} expected {item['expected'] or 'abstain'}: "
                  f"{item['before']} -> {item['after']}")
    return 0


def _floor(text: str) -> tuple:
    from assistant.evaluate import METRIC_NAMES

    name, sep, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = None
    if not sep or name not in METRIC_NAMES or number is None:
        raise argparse.ArgumentTypeError(f"expected METRIC=VALUE with METRIC in {', '.join(METRIC_NAMES)}")
    return name, number


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m assistant", description="NICE CG81 guideline assistant core")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="parse the guideline and build the retrieval index").set_defaults(fn=cmd_build)
    ask = sub.add_parser("ask", help="answer one question")
    ask.add_argument("question")
    ask.add_argument("--json", action="store_true", help="print the reply and its payload as JSON")
    ask.set_defaults(fn=cmd_ask)
    sub.add_parser("chat", help="interactive question and answer over the core").set_defaults(fn=cmd_chat)
    ev = sub.add_parser("eval", help="evaluate on a gold question set")
    ev.add_argument("--gold", help="gold set (YAML)")
    ev.add_argument("--compare", nargs=2, metavar=("OLD.json", "NEW.json"),
                    help="list the items fixed and broken between two --json results")
    ev.add_argument("--html", help="write a self-contained HTML report (charts, reliability, misses) here")
    ev.add_argument("--via", choices=("core", "rest"), default="core")
    ev.add_argument("--url", default="http://localhost:5005")
    ev.add_argument("--json", help="write metrics and per-item results here")
    ev.add_argument("--report", help="write a Markdown report here")
    ev.add_argument("--baselines", action="store_true", help="also rank with BM25 alone and dense alone")
    ev.add_argument("--require-hybrid-best", action="store_true", help="fail unless hybrid beats both baselines")
    ev.add_argument("--min", action="append", default=[], type=_floor, metavar="METRIC=VALUE",
                    help="regression floor, e.g. top1=0.92 (repeatable)")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(fn=cmd_eval)
    au = sub.add_parser("audit", help="export or summarise the audit trail (for the clinical safety officer)")
    au.add_argument("action", choices=("export", "summary"))
    au.add_argument("--since", help="ISO date or time, e.g. 2026-11-01")
    au.add_argument("--format", choices=("csv", "json"), default="csv", help="export format (standard output)")
    au.add_argument("--url", help="database URL (default: TRACKER_STORE_URL, else var/tracker.db)")
    au.set_defaults(fn=cmd_audit)
    args = parser.parse_args(argv)
    config.offline()
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
