"""Benchmark of one conversational turn over Rasa's REST channel, against a static-response baseline.

    .venv/bin/python benchmarks/bench_rest.py [--url URL] [--actions-url URL] [--measure-startup] [--json OUT]

Against running servers (`make bench` runs it under `scripts/serve.sh --exec`, which exports RASA_PORT and
ACTIONS_PORT), or, with --measure-startup, against servers it starts itself: `scripts/serve.sh` on free
ports in a new process group, timed until both answer, and stopped with SIGTERM at the end. That mode is
also the default when --url is not given and nothing listens on the default Rasa port.

Figures are printed beside a baseline measured in the same run (a plain Rasa turn answered by a static
response: "hello" → utter_greet, no custom action) and beside the issue's targets. It prints, it never
asserts: the exit status is 0 whatever the figures (1 only if there is no server to measure).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from assistant import answer, config  # noqa: E402

GOLD = ROOT / "tests" / "gold" / "cg81_gold.yaml"
TARGET_P95_MS = 150.0      # issue target: p95 of a guideline turn over REST
TARGET_RATIO = 2.0         # issue target: guideline-turn p95 at most twice a static Rasa turn's p95
STATIC_MESSAGE = "hello"   # intent greet → utter_greet (a rule; no custom action)


# ---------------------------------------------------------------------- helpers
from stats import summary_ms, verdict, write_json  # noqa: E402


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port(avoid: set) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port


def get_ok(url: str, timeout: float = 5) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (OSError, ValueError):
        return False


def post_turn(webhook: str, sender: str, message: str, timeout: float) -> tuple:
    """One turn, timed from the request to the whole reply read: (seconds, status, messages or None)."""
    body = json.dumps({"sender": sender, "message": message}).encode("utf-8")
    req = urllib.request.Request(webhook, data=body, headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data = resp.read()
            elapsed = time.perf_counter() - t0
            return elapsed, resp.status, json.loads(data.decode("utf-8"))
    except urllib.error.HTTPError as exc:
        return time.perf_counter() - t0, exc.code, None
    except (OSError, ValueError):
        return time.perf_counter() - t0, None, None


def utter_greet_text() -> str | None:
    import yaml

    domain = yaml.safe_load((ROOT / "domain.yml").read_text(encoding="utf-8"))
    variants = domain.get("responses", {}).get("utter_greet") or []
    return variants[0].get("text") if variants else None


# ---------------------------------------------------------------------- memory, by listening port
def listening_inodes(port: int) -> set:
    """Socket inodes in LISTEN state (st 0A) on `port`, from /proc/net/tcp and tcp6."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes - {"0"}


def pids_listening(port: int) -> list:
    """PIDs holding a listening socket on `port`: match its inode among every process's open fds."""
    targets = {f"socket:[{i}]" for i in listening_inodes(port)}
    if not targets:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry}/fd/{fd}") in targets:
                    pids.append(int(entry))
                    break
            except OSError:
                continue
    return sorted(pids)


def proc_memory(pid: int) -> dict | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    out = {"pid": pid, "cmd": cmdline[:100]}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key.lower() + "_mib"] = round(int(value.split()[0]) / 1024, 1)
        elif key == "PPid":
            out["ppid"] = int(value)
    return out


def server_memory(port: int) -> list:
    return [m for m in (proc_memory(p) for p in pids_listening(port)) if m]


# ---------------------------------------------------------------------- servers started here
class Servers:
    """scripts/serve.sh on free ports, in its own process group, logs in a temporary directory."""

    def __init__(self, workdir: Path, timeout: float) -> None:
        self.workdir = workdir
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.rasa_port = free_port(set())
        self.actions_port = free_port({self.rasa_port})
        self.out_path = workdir / "serve.out"

    @property
    def output(self) -> str:
        try:
            return self.out_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self) -> dict:
        """Start, then time until Rasa's /webhooks/rest/ and the action server's /health answer 200; then
        wait for serve.sh's own "ready" (it also warms the action server's core) so that warm-up request
        does not overlap the measurements. Raises RuntimeError when the servers do not come up."""
        env = dict(os.environ, RASA_PORT=str(self.rasa_port), ACTIONS_PORT=str(self.actions_port),
                   LOG_DIR=str(self.workdir / "logs"), READY_TIMEOUT=str(int(self.timeout)))
        out = self._out = open(self.out_path, "w")  # closed in stop()
        t0 = time.monotonic()
        self.proc = subprocess.Popen([str(ROOT / "scripts" / "serve.sh")], cwd=ROOT, env=env, stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        pending = {"rasa": f"http://127.0.0.1:{self.rasa_port}/webhooks/rest/",
                   "actions": f"http://127.0.0.1:{self.actions_port}/health"}
        seen: dict = {}
        while pending:
            if self.proc.poll() is not None:
                raise RuntimeError(f"scripts/serve.sh exited with {self.proc.returncode}:\n{self.output[-2000:]}"
                                   + self._log_tail())
            if time.monotonic() - t0 > self.timeout:
                raise RuntimeError(f"not ready after {self.timeout:.0f} s: {', '.join(pending)}" + self._log_tail())
            for name, url in list(pending.items()):
                if get_ok(url, timeout=2):
                    seen[name] = time.monotonic() - t0
                    pending.pop(name)
            if pending:
                time.sleep(0.1)
        both = time.monotonic() - t0
        serve_ready = None
        while time.monotonic() - t0 < self.timeout + 60 and self.proc.poll() is None:
            text = self.output
            if "\nready:" in text or text.startswith("ready:"):
                serve_ready = time.monotonic() - t0
                break
            time.sleep(0.1)
        reported = next((line.split("ready in", 1)[1].strip().rstrip("s") for line in self.output.splitlines()
                         if line.startswith("ready in")), None)
        return {"both_200_s": round(both, 2), "rasa_200_s": round(seen["rasa"], 2),
                "actions_200_s": round(seen["actions"], 2),
                "serve_sh_ready_s": round(serve_ready, 2) if serve_ready else None,
                "serve_sh_reported_s": float(reported) if reported else None}

    def _log_tail(self) -> str:
        tails = []
        for log in sorted((self.workdir / "logs").glob("*.log")):
            tails.append(f"\n--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
        return "".join(tails)

    def stop(self) -> str:
        """SIGTERM to the process group (serve.sh, Rasa, the action server); SIGKILL after 30 s."""
        if self.proc is None:
            return "not started"
        how = "already exited"
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                how = "stopped with SIGTERM"
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
                how = "SIGTERM ignored for 30 s: killed with SIGKILL"
            except ProcessLookupError:
                pass
        # Stragglers of the group (a server that outlived serve.sh) go too.
        deadline = time.monotonic() + 15
        while (port_open(self.rasa_port) or port_open(self.actions_port)) and time.monotonic() < deadline:
            time.sleep(0.2)
        if port_open(self.rasa_port) or port_open(self.actions_port):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
                how += "; leftover server killed with SIGKILL"
            except ProcessLookupError:
                how += "; a port is still open but the process group is gone"
        self._out.close()
        return how


# ---------------------------------------------------------------------- measurement
def run_benchmark(url: str, timeout: float, warmup: int, static_n: int, limit: int | None,
                  budget_s: float) -> dict:
    from assistant.evaluate import load_gold

    webhook = url.rstrip("/") + "/webhooks/rest/webhook"
    items = load_gold(GOLD)[:limit] if limit else load_gold(GOLD)
    run_id = uuid.uuid4().hex[:8]
    greet = utter_greet_text()

    # Warm-up: the first `warmup` gold turns (each item its own sender) and a few static turns.
    done = 0
    for item in items:
        sender = f"bench-warm-{run_id}-{item['id']}"
        for turn in item["turns"]:
            if done >= warmup:
                break
            post_turn(webhook, sender, turn, timeout)
            done += 1
        if done >= warmup:
            break
    for i in range(3):
        post_turn(webhook, f"bench-warm-{run_id}-hello-{i}", STATIC_MESSAGE, timeout)

    # Timed: every item's turns in order, one client, sequential. Items are shuffled (fixed seed) so that a
    # run cut short by the time budget still samples every topic. The static turns are interleaved evenly
    # (by items played or by time spent, whichever is further on), so both series see the same machine load.
    order = list(items)
    random.Random(0).shuffle(order)
    guideline, static = [], []
    counts = dict.fromkeys(("errors", "service_unavailable", "items_with_guideline_payload",
                            "static_answered_by_utter_greet", "static_errors"), 0)

    def static_turn() -> None:
        elapsed, status, messages = post_turn(webhook, f"bench-{run_id}-hello-{len(static)}", STATIC_MESSAGE,
                                              timeout)
        static.append(elapsed)
        if status != 200 or messages is None:
            counts["static_errors"] += 1
        elif greet is not None and [m.get("text") for m in messages] == [greet]:
            counts["static_answered_by_utter_greet"] += 1

    t_run = time.perf_counter()
    played = 0
    for item in order:
        if time.perf_counter() - t_run > budget_s:
            break
        played += 1
        sender = f"bench-{run_id}-{item['id']}"
        messages = None
        for turn in item["turns"]:
            elapsed, status, messages = post_turn(webhook, sender, turn, timeout)
            guideline.append(elapsed)
            if status != 200 or messages is None:
                counts["errors"] += 1
            elif any(m.get("text") == answer.SERVICE_UNAVAILABLE for m in messages):
                counts["service_unavailable"] += 1
        if messages and any(isinstance(m.get("custom"), dict) and m["custom"].get("type") == "guideline_answer"
                            for m in messages):
            counts["items_with_guideline_payload"] += 1
        progress = max(played / len(order), (time.perf_counter() - t_run) / budget_s)
        while len(static) < min(static_n, int(progress * static_n)):
            static_turn()
    while len(static) < static_n:  # a run cut short owes the rest of the baseline
        static_turn()
    return {"url": url, "items": played, "items_in_gold": len(items), "turns": len(guideline),
            "run_s": round(time.perf_counter() - t_run, 1), "budget_s": budget_s,
            "guideline": summary_ms(guideline), "static": summary_ms(static), **counts, "warmup_turns": done}


def print_memory(label: str, port: int) -> dict:
    """Each process holding the listening socket (a Sanic worker manager and its worker share it)."""
    mems = server_memory(port)
    if not mems:
        print(f"  {label} (:{port}): no process found listening on the port (/proc/net/tcp + /proc/*/fd)")
        return {"processes": []}
    pids = {m["pid"] for m in mems}
    for m in mems:
        role = " (worker of the pid above)" if m.get("ppid") in pids else ""
        print(f"  {label} (:{port}) pid {m['pid']}{role}: VmRSS {m.get('vmrss_mib', 0):.0f} MiB, "
              f"VmHWM {m.get('vmhwm_mib', 0):.0f} MiB  [{m['cmd'][:70]}]")
    total = {"vmrss_mib": round(sum(m.get("vmrss_mib", 0) for m in mems), 1),
             "vmhwm_mib": round(sum(m.get("vmhwm_mib", 0) for m in mems), 1)}
    if len(mems) > 1:
        print(f"  {label} total over {len(mems)} processes: VmRSS {total['vmrss_mib']:.0f} MiB "
              f"(sum of VmHWM {total['vmhwm_mib']:.0f} MiB; shared pages are counted in each)")
    return {"processes": mems, "total": total}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="Rasa server (default http://127.0.0.1:$RASA_PORT, port 5005 when unset)")
    parser.add_argument("--actions-url", help="action server (default http://127.0.0.1:$ACTIONS_PORT or 5055)")
    parser.add_argument("--measure-startup", action="store_true",
                        help="start scripts/serve.sh here on free ports, time its readiness, stop it at the end "
                             "(the default when --url is not given and nothing listens on the default port)")
    parser.add_argument("--ready-seconds", type=float,
                        help="readiness time of servers started elsewhere, to print beside the figures "
                             "(else $READY_SECONDS)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed gold turns first (default 10)")
    parser.add_argument("--static-n", type=int, default=100, help="static 'hello' turns (default 100)")
    parser.add_argument("--limit", type=int, help="only the first N gold items")
    parser.add_argument("--budget", type=float, default=90.0, metavar="SECONDS",
                        help="time allowed for the timed turns (default 90): on a slow or busy machine fewer "
                             "gold items are played (shuffled, so every topic is sampled) and the counts say so")
    parser.add_argument("--timeout", type=float, default=60, help="per-request timeout, seconds")
    parser.add_argument("--startup-timeout", type=float, default=180, help="seconds allowed for the servers to start")
    parser.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    config.offline()
    if args.measure_startup and (args.url or args.actions_url):
        parser.error("--measure-startup starts its own servers on free ports: do not combine it with --url")

    rasa_port = int(os.environ.get("RASA_PORT") or 5005)
    actions_port = int(os.environ.get("ACTIONS_PORT") or 5055)
    launch = args.measure_startup or (args.url is None and not port_open(rasa_port))
    results: dict = {"loadavg_1m_start": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}
    print(f"bench_rest: {os.cpu_count()} CPUs, load average {results['loadavg_1m_start']} (1 min)")
    if results["loadavg_1m_start"] > (os.cpu_count() or 1) * 0.5:
        print("  note: the machine is busy (other processes are running): timings are noisier and pessimistic")

    servers = None
    tmp = None

    def on_term(signum, frame):  # a TERM to the benchmark still stops the servers it started
        raise SystemExit(128 + signum)

    try:
        if launch:
            model = Path(os.environ.get("RASA_MODEL") or ROOT / "models" / "cg81.tar.gz")
            if not model.is_absolute():
                model = ROOT / model
            if not model.exists():
                print(f"cannot start the servers: no trained Rasa model at {model} (run `make train`)")
                return 1
            signal.signal(signal.SIGTERM, on_term)
            tmp = tempfile.TemporaryDirectory(prefix="bench-rest-")
            servers = Servers(Path(tmp.name), args.startup_timeout)
            why = "--measure-startup" if args.measure_startup else f"nothing listens on :{rasa_port}"
            print(f"\n[1/4] startup ({why}): scripts/serve.sh, Rasa on :{servers.rasa_port}, actions on "
                  f":{servers.actions_port}, logs in {tmp.name}/logs")
            try:
                ready = servers.start()
            except RuntimeError as exc:
                print(f"  servers did not start: {exc}")
                results["startup_error"] = str(exc)
                return 1
            results["startup"] = ready
            rasa_port, actions_port = servers.rasa_port, servers.actions_port
            url, actions_url = f"http://127.0.0.1:{rasa_port}", f"http://127.0.0.1:{actions_port}"
            print(f"  both answer 200 after {ready['both_200_s']:.1f} s from launch (Rasa /webhooks/rest/ "
                  f"{ready['rasa_200_s']:.1f} s, actions /health {ready['actions_200_s']:.1f} s)")
            if ready["serve_sh_ready_s"]:
                print(f"  serve.sh ready (after its warm-up request, which loads the action server's core): "
                      f"{ready['serve_sh_ready_s']:.1f} s from launch; it reports "
                      f"\"ready in {ready['serve_sh_reported_s']}s\"")
        else:
            url = args.url or f"http://127.0.0.1:{rasa_port}"
            actions_url = args.actions_url or f"http://127.0.0.1:{actions_port}"
            rasa_port = urllib.parse.urlsplit(url).port or 80
            actions_port = urllib.parse.urlsplit(actions_url).port or 80
            ready_s = args.ready_seconds if args.ready_seconds is not None else (
                float(os.environ["READY_SECONDS"]) if os.environ.get("READY_SECONDS") else None)
            results["startup"] = {"ready_s": ready_s}
            print(f"\n[1/4] startup: servers already running at {url} and {actions_url}")
            if ready_s is not None:
                print(f"  readiness: {ready_s:.1f} s (given)")
            else:
                print("  readiness: not visible from here: see `make serve` output (ready in Xs), pass "
                      "--ready-seconds, or run with --measure-startup")
            if not get_ok(url.rstrip("/") + "/webhooks/rest/"):
                print(f"  no Rasa server answers at {url}: nothing to measure")
                return 1
            if not get_ok(actions_url.rstrip("/") + "/health"):
                print(f"  note: the action server at {actions_url} does not answer /health")

        print(f"\n[2/4] latency of one turn over REST (POST /webhooks/rest/webhook, one client, sequential): "
              f"gold items' turns in order, each item its own sender, after {args.warmup} warm-up turns; "
              f"{args.static_n} static '{STATIC_MESSAGE}' turns (fresh senders) interleaved as the baseline")
        bench = run_benchmark(url, args.timeout, args.warmup, args.static_n, args.limit, args.budget)
        results["latency"] = bench
        g, s = bench["guideline"], bench["static"]
        print(f"  guideline turn: p50 {g['p50_ms']:.0f} ms, p95 {g['p95_ms']:.0f} ms, max {g['max_ms']:.0f} ms  "
              f"(n={g['n']} turns of {bench['items']}/{bench['items_in_gold']} items; "
              f"{bench['items_with_guideline_payload']} items end with "
              f"a guideline payload; errors {bench['errors']}, service-unavailable replies "
              f"{bench['service_unavailable']})")
        if s["n"]:
            print(f"  baseline, static turn (greet → utter_greet): p50 {s['p50_ms']:.0f} ms, p95 {s['p95_ms']:.0f} ms, "
                  f"max {s['max_ms']:.0f} ms  (n={s['n']}; {bench['static_answered_by_utter_greet']} answered "
                  f"with utter_greet, errors {bench['static_errors']})")
            ratio = g["p95_ms"] / s["p95_ms"]
            results["ratio_guideline_p95_over_static_p95"] = round(ratio, 2)
            print(f"  ratio guideline p95 / static p95: {ratio:.2f}x")
        else:
            ratio = None

        print("\n[3/4] server memory (PIDs by listening socket: /proc/net/tcp → /proc/*/fd)")
        results["memory"] = {"rasa": print_memory("Rasa", rasa_port),
                             "actions": print_memory("action server", actions_port)}

        print("\n[4/4] targets from the issue (printed, not asserted)")
        targets = {"p95_ms": {"target": TARGET_P95_MS, "value": g["p95_ms"],
                              "verdict": verdict(g["p95_ms"], TARGET_P95_MS)}}
        print(f"  guideline turn p95 ≤ {TARGET_P95_MS:.0f} ms: {g['p95_ms']:.0f} ms → {targets['p95_ms']['verdict']}")
        if ratio is not None:
            targets["ratio"] = {"target": TARGET_RATIO, "value": round(ratio, 2),
                                "verdict": verdict(ratio, TARGET_RATIO)}
            print(f"  guideline p95 ≤ {TARGET_RATIO:.0f}x static p95: {ratio:.2f}x → {targets['ratio']['verdict']}")
        results["targets"] = targets
        results["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
        print(f"\nbench_rest: {bench['run_s']:.0f} s of timed turns; load average now {results['loadavg_1m_end']}")
        return 0
    finally:
        if servers is not None:
            how = servers.stop()
            results["servers_stopped"] = how
            print(f"servers started here: {how}; ports :{servers.rasa_port} and :{servers.actions_port} "
                  f"{'still open' if port_open(servers.rasa_port) or port_open(servers.actions_port) else 'closed'}")
        if tmp is not None:
            tmp.cleanup()
        if args.json:
            write_json(args.json, results)


if __name__ == "__main__":
    sys.exit(main())
