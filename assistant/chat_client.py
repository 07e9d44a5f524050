"""Terminal chat over the Rasa REST channel (what `make run` opens). Standard library only."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import uuid

from assistant.evaluate import RestClient


def show(messages: list) -> list:
    buttons: list = []
    for m in messages:
        if m.get("text"):
            print(f"\nbot> {m['text']}")
        for i, b in enumerate(m.get("buttons") or [], 1):
            print(f"  [{i}] {b['title']}")
            buttons.append(b)
    return buttons


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="chat with the CG81 assistant over REST")
    parser.add_argument("--url", default="http://127.0.0.1:5005")
    parser.add_argument("--json", action="store_true", help="also print the guideline_answer payloads")
    args = parser.parse_args(argv)
    client = RestClient(args.url)
    sender = f"terminal-{uuid.uuid4().hex[:8]}"
    print("NICE CG81 guideline assistant. Ask a question, type a number to pick an option, Ctrl-D to leave.")
    buttons: list = []
    while True:
        try:
            line = input("\nyou> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if line.strip().isdigit() and buttons and 1 <= int(line) <= len(buttons):
            line = buttons[int(line) - 1]["payload"]
        try:
            messages = client.send(sender, line)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            print(f"bot> (the assistant is not reachable: {exc})", file=sys.stderr)
            continue
        buttons = show(messages)
        if args.json:
            for m in messages:
                if m.get("custom"):
                    print(json.dumps(m["custom"], indent=2, ensure_ascii=False))


if __name__ == "__main__":
    sys.exit(main())
