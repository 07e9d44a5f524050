"""The assistant as a service: figures printed, never asserted (`make bench-service`, run with .venv-rasa).

1. Turn latency at turn 1 vs turn 200 of one conversation over REST (medians of turns 1-20 and 181-200, all
   turns and the static greeting turns alone), single replica as `make serve` runs it (SQLite, one action
   server) and on PostgreSQL; with sessions rolled over every CG81_SESSION_MAX_TURNS (default 10) and, in the
   same run, without (one unbounded session, i.e. what Rasa does by itself).
2. Load with locust: 200 concurrent conversations x 5 turns through nginx to 2 Rasa replicas (PostgreSQL,
   Redis, 2 action servers behind nginx), then the same against 1 replica: first with each turn sent as
   soon as the last is answered (saturation: throughput), then with 10 s of reading between turns (p95 at a
   load the machine can carry). Errors, lost or reordered turns (checked in the tracker store), throughput,
   p50/p95.
3. Resident memory of every process after the load.

Options: --skip-turns, --skip-load, --users N, --turns N.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import service_stack as ss  # noqa: E402

TOOLS_PY = ROOT / "build" / "service-tools" / "bin" / "python"
QUESTIONS = ["should I monitor with PET-CT?", "bone mets imaging?", "show 1.5.16",
             "first line endocrine therapy for a postmenopausal woman with ER+ MBC", "and for men?",
             "list all the recommendations on brain metastases", "what about lymphoedema?", "hello"]


def rss_mib(pid: int) -> float:
    """Resident memory of a process and every process in its group (rasa-sdk forks a worker)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            pgid = int(stat.rsplit(")", 1)[1].split()[2])
            if pgid != pid and int(entry) != pid:
                continue
            for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1024


def turn_latencies(stack: ss.Stack, turns: int) -> tuple:
    base = stack.replicas[0].base
    convo = f"long-{uuid.uuid4().hex[:8]}"
    all_ms, greet_ms = [], {}
    for i in range(turns):
        text = QUESTIONS[i % len(QUESTIONS)]
        t0 = time.perf_counter()
        ss.say(base, convo, text)
        ms = (time.perf_counter() - t0) * 1000
        all_ms.append(ms)
        if text == "hello":
            greet_ms[i] = ms
    return all_ms, greet_ms


def summarise_turns(label: str, all_ms: list, greet_ms: dict, turns: int) -> dict:
    first, last = all_ms[:20], all_ms[turns - 20:turns]
    g_first = [v for k, v in greet_ms.items() if k < 40]
    g_last = [v for k, v in greet_ms.items() if k >= turns - 40]
    row = {"label": label, "first": statistics.median(first), "last": statistics.median(last),
           "g_first": statistics.median(g_first), "g_last": statistics.median(g_last)}
    row["ratio"] = row["last"] / row["first"]
    print(f"  {label:<46} turns 1-20 {row['first']:6.1f} ms   turns {turns - 19}-{turns} {row['last']:6.1f} ms "
          f"({row['ratio']:.2f}x)   greeting {row['g_first']:5.1f} -> {row['g_last']:5.1f} ms", flush=True)
    return row


def bench_turns(turns: int) -> list:
    print(f"\n== turn latency over one conversation of {turns} turns (median ms, one replica)", flush=True)
    rows = []
    for label, postgres, env in (
            ("SQLite (make serve), sessions rolled over", False, {}),
            ("SQLite, one unbounded session (Rasa alone)", False, {"CG81_SESSION_MAX_TURNS": "1000000"}),
            ("PostgreSQL, sessions rolled over", True, {}),
            ("PostgreSQL, one unbounded session", True, {"CG81_SESSION_MAX_TURNS": "1000000"})):
        with ss.Stack(replicas=1, actions=1, postgres=postgres, redis=False, proxy=False, env=env) as stack:
            for _ in range(3):  # warm the replica's NLU and the action server's core
                ss.say(stack.replicas[0].base, f"warm-{uuid.uuid4().hex[:6]}", "bone mets imaging?")
            rows.append(summarise_turns(label, *turn_latencies(stack, turns), turns))
    return rows


def run_locust(host: str, users: int, out: Path, think: float = 0) -> dict:
    # Saturating runs start every user at once; with think time, users arrive over one think time (20/s for
    # 200 users and 10 s), as clinicians would, rather than in one burst.
    spawn_rate = users / think if think else 100
    subprocess.run([str(TOOLS_PY), str(ROOT / "benchmarks" / "locust_service.py"), "--host", host, "--users",
                    str(users), "--out", str(out), "--think", str(think), "--spawn-rate", str(spawn_rate)],
                   check=True, cwd=ROOT)
    return json.loads(out.read_text())


def check_store(stack: ss.Stack, result: dict) -> dict:
    """Lost or reordered turns: every conversation's stored user messages must equal what was sent."""
    import sqlalchemy as sa

    sent = {sender: [r["text"] for r in replies] for sender, replies in result["conversations"].items()}
    engine = stack.engine()
    stored: dict = {s: [] for s in sent}
    with engine.connect() as conn:
        for sender, data in conn.execute(sa.text("SELECT sender_id, data FROM events WHERE sender_id LIKE 'load-%' "
                                                 "ORDER BY id")):
            if sender in stored:
                event = json.loads(data)
                if event.get("event") == "user":
                    stored[sender].append(event.get("text"))
    engine.dispose()
    lost = sum(max(0, len(sent[s]) - len(stored[s])) for s in sent)
    reordered = sum(1 for s in sent if sorted(sent[s]) == sorted(stored[s]) and sent[s] != stored[s])
    mismatched = sum(1 for s in sent if sorted(sent[s]) != sorted(stored[s]))
    wrong = sum(1 for replies in result["conversations"].values() for r in replies
                if r["text"].startswith("Previously") and r["ids"] and r["ids"][0] != "1.3.6")
    return {"lost": lost, "reordered": reordered, "mismatched": mismatched, "wrong_context": wrong}


def bench_load(users: int) -> None:
    print(f"\n== load: {users} concurrent conversations x 5 turns (locust), PostgreSQL + Redis + 2 action servers",
          flush=True)
    with ss.Stack(replicas=2, actions=2, postgres=True, redis=True, proxy=True) as stack:
        rows = []
        for label, host, think in (("2 replicas behind nginx", stack.front, 0),
                                   ("1 replica", stack.replicas[0].base, 0),
                                   ("2 replicas, 10 s think time", stack.front, 10),
                                   ("1 replica, 10 s think time", stack.replicas[0].base, 10)):
            result = run_locust(host, users, stack.tmp / f"locust-{len(rows)}.json", think)
            checks = check_store(stack, result)
            rows.append((label, result, checks))
            print(f"  {label:<28} {result['turns']:5d} turns in {result['elapsed_s']:6.1f} s = "
                  f"{result['throughput_turns_per_s']:5.1f} turns/s; p50 {result['p50_ms']:6.0f} ms, "
                  f"p95 {result['p95_ms']:6.0f} ms, max {result['max_ms']:6.0f} ms; errors {result['failures']}; "
                  f"lost {checks['lost']}, reordered {checks['reordered']}, mismatched {checks['mismatched']}, "
                  f"wrong context {checks['wrong_context']}", flush=True)
        print("\n== resident memory after the load (MiB; process + its children)")
        for proc in [*stack.replicas, *stack.action_servers]:
            print(f"  {proc.name:<12} {rss_mib(proc.proc.pid):7.0f}")
        for name, proc in (("nginx", stack.nginx.proc), ("redis", stack.redis.proc)):
            print(f"  {name:<12} {rss_mib(proc.proc.pid):7.0f}")
        pg_pid = int((stack.pg.dir / "data" / "postmaster.pid").read_text().split()[0])
        print(f"  {'postgres':<12} {rss_mib(pg_pid):7.0f}  (postmaster + backends; shared buffers counted per process)")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-turns", action="store_true")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--turns", type=int, default=200)
    args = parser.parse_args()
    print(f"bench_service: {os.cpu_count()} cores, model {ss.MODEL}")
    if not args.skip_turns:
        bench_turns(args.turns)
    if not args.skip_load:
        if not TOOLS_PY.exists():
            print("locust is missing: make install-service-tools")
            return 1
        bench_load(args.users)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
