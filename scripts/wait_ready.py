"""Wait until both servers answer, then warm the action server so the first clinician is not slow.

The warm-up is an action call, so it carries the shared secret Rasa itself sends (CG81_ACTION_TOKEN): without
it the action server refuses it (401) and the first clinician's turn pays for loading the core."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request

WARM_UP = {
    "next_action": "action_answer_recommendation",
    "sender_id": "warm-up",
    "tracker": {"sender_id": "warm-up", "slots": {}, "latest_message": {"text": "bone mets imaging", "intent": {}},
                "events": [], "paused": False, "followup_action": None, "active_loop": {},
                "latest_action_name": None},
    "domain": {"responses": {}},
}


def ok(url: str, body: dict | None = None, token: str = "") -> bool:
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        req = urllib.request.Request(url, data=data, headers=headers)
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status == 200
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rasa", required=True)
    parser.add_argument("--actions", required=True)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    t0 = time.monotonic()
    pending = {"actions": f"{args.actions}/health", "rasa": f"{args.rasa}/webhooks/rest/"}
    while pending and time.monotonic() - t0 < args.timeout:
        for name, url in list(pending.items()):
            if ok(url):
                pending.pop(name)
        time.sleep(0.3)
    if pending:
        print(f"not ready after {args.timeout:.0f}s: {', '.join(pending)}", file=sys.stderr)
        return 1
    if not ok(f"{args.actions}/webhook", WARM_UP, os.environ.get("CG81_ACTION_TOKEN", "")):
        print("warning: the action server's warm-up call failed; the first turn loads the core", file=sys.stderr)
    print(f"ready in {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
