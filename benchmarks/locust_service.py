"""Locust load for benchmarks/bench_service.py (runs in build/service-tools, where locust is installed).

Each simulated clinician holds one conversation of 5 turns over REST (a question that needs the patient,
the patient, the clarification, two more questions) and stops; all users start within a few seconds and
send each turn as soon as the last is answered (--think S: wait 0.5-1.5 x S seconds between turns).
Writes the locust statistics and every reply (status, answer IDs) to --out for the caller to check against
the tracker store.

  build/service-tools/bin/python benchmarks/locust_service.py --host http://127.0.0.1:8080 --users 200 --out r.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
import uuid

import gevent
from locust import FastHttpUser, events, task  # noqa: F401 - events keeps locust's hooks importable
from locust.env import Environment
from locust.exception import StopUser

SCRIPT = ["which endocrine therapy for ER positive advanced breast cancer?",
          "Premenopausal or perimenopausal woman",
          "Previously treated with tamoxifen",
          "should I monitor with PET-CT?",
          "show 1.5.16"]
UNAVAILABLE = "no recommendation has been given"
RESULTS: dict = {}


class Clinician(FastHttpUser):
    network_timeout = 600.0
    connection_timeout = 60.0

    @task
    def conversation(self) -> None:
        sender = f"load-{uuid.uuid4().hex[:12]}"
        replies = RESULTS.setdefault(sender, [])
        think = float(os.environ.get("CG81_LOAD_THINK_S", "0"))
        for i, text in enumerate(SCRIPT):
            if think and i:
                gevent.sleep(random.uniform(0.5 * think, 1.5 * think))  # a clinician reading the answer
            with self.client.post("/webhooks/rest/webhook", json={"sender": sender, "message": text},
                                  name="turn", catch_response=True) as resp:
                entry = {"text": text, "status": resp.status_code, "ids": None, "unavailable": False}
                try:
                    messages = resp.json()
                    custom = next((m["custom"] for m in messages if isinstance(m.get("custom"), dict)), None)
                    entry["ids"] = [a["id"] for a in custom["answers"]] if custom else None
                    entry["unavailable"] = any(UNAVAILABLE in (m.get("text") or "") for m in messages)
                except Exception:  # noqa: BLE001
                    pass
                if resp.status_code != 200 or entry["unavailable"] or entry["ids"] is None:
                    resp.failure(f"status {resp.status_code}, unavailable={entry['unavailable']}")
                else:
                    resp.success()
                replies.append(entry)
        raise StopUser()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--spawn-rate", type=float, default=100)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--out", required=True)
    parser.add_argument("--think", type=float, default=0, help="mean seconds between a user's turns")
    args = parser.parse_args()
    os.environ["CG81_LOAD_THINK_S"] = str(args.think)
    env = Environment(user_classes=[Clinician], host=args.host)
    runner = env.create_local_runner()
    t0 = time.monotonic()
    runner.start(args.users, spawn_rate=args.spawn_rate)
    gevent.sleep(1)
    while time.monotonic() - t0 < args.timeout:
        finished = sum(len(r) == len(SCRIPT) for r in RESULTS.values())
        if finished >= args.users:
            break
        gevent.sleep(0.5)
    elapsed = time.monotonic() - t0
    runner.quit()
    stats = env.stats.get("turn", "POST")
    out = {"users": args.users, "turns": stats.num_requests, "failures": stats.num_failures,
           "elapsed_s": elapsed, "throughput_turns_per_s": stats.num_requests / elapsed,
           "p50_ms": stats.get_response_time_percentile(0.5), "p95_ms": stats.get_response_time_percentile(0.95),
           "max_ms": stats.max_response_time, "conversations": RESULTS}
    with open(args.out, "w") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
