"""Benchmark of the web chat as a clinician sees it: Enter pressed → answer card visible, in headless Chromium,
beside the REST turn and the web chat's own JSON turn measured in the same run.

    .venv/bin/python benchmarks/bench_web.py [--url http://127.0.0.1:5005] [--n 50] [--json OUT]

Without --url it starts scripts/serve.sh on free ports (and stops it at the end). Questions are answerable
single-turn gold items, shuffled with a fixed seed and dealt in turn to the three series, so no series
gets a question another has already warmed in the core's caches, and all three see the same machine load.
Each browser question starts a new conversation (not timed), as each REST question has a fresh sender.

The browser figure is measured inside the page: from the Enter keydown (performance.now) to two animation
frames after the answer's card entered the DOM, i.e. after it was painted. It prints, it never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from servers import Stack, launch_chromium  # noqa: E402
from stats import summary_ms, write_json  # noqa: E402

from assistant.evaluate import load_gold  # noqa: E402

GOLD = ROOT / "tests" / "gold" / "cg81_gold.yaml"
WARMUP = 5

# Installed before Enter is pressed; resolves with milliseconds from the Enter keydown to the new bot turn's
# card painted (two animation frames after it entered the DOM), and what the turn showed.
ARM = """(n0) => {
  const log = document.getElementById('log');
  const input = document.getElementById('question');
  let t0 = null;
  input.addEventListener('keydown', (e) => { if (e.key === 'Enter' && t0 === null) t0 = performance.now(); },
                         {capture: true, once: true});
  window.__benchTurn = new Promise((resolve) => {
    const check = () => {
      const turn = log.querySelectorAll(':scope > .turn--bot, :scope > .turn--error')[n0];
      if (!turn) return;
      obs.disconnect();
      const kind = turn.querySelector('article[data-rec-id]') ? 'card'
        : turn.querySelector('[data-abstained]') ? 'abstention' : turn.classList.contains('turn--error') ? 'error'
        : 'text';
      requestAnimationFrame(() => requestAnimationFrame(() => resolve({ms: performance.now() - t0, kind})));
    };
    const obs = new MutationObserver(check);
    obs.observe(log, {childList: true});
  });
}"""


def post_json(url: str, body: dict, headers: dict | None = None, timeout: float = 120) -> tuple:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json",
                                                                               **(headers or {})})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data = json.loads(resp.read())
            return time.perf_counter() - t0, resp.status, data
    except urllib.error.HTTPError as exc:
        return time.perf_counter() - t0, exc.code, None
    except (OSError, ValueError):
        return time.perf_counter() - t0, None, None


def questions(n: int) -> list:
    items = [i for i in load_gold(GOLD) if i["expected"] and len(i["turns"]) == 1]
    random.Random(0).shuffle(items)
    return [i["turns"][0] for i in items]


class Browser:
    def __init__(self, playwright, url: str) -> None:
        self.browser = launch_chromium(playwright)
        self.page = self.browser.new_page(viewport={"width": 1280, "height": 900})
        self.page.set_default_timeout(120_000)
        self.page.goto(url)
        self.page.wait_for_selector("body[data-ready='true']", state="attached")

    def ask(self, text: str) -> dict:
        page = self.page
        page.get_by_role("button", name="New conversation").click()
        page.wait_for_function("() => document.querySelectorAll('#log > *').length === 0 "
                               "&& document.activeElement.id === 'question'")
        page.evaluate(ARM, 0)
        page.get_by_label("Ask a question").fill(text)
        page.keyboard.press("Enter")
        return page.evaluate("window.__benchTurn")

    def close(self) -> None:
        self.browser.close()


def run(url: str, n: int) -> dict:
    from playwright.sync_api import sync_playwright

    pool = questions(3 * (n + WARMUP))
    if len(pool) < 3 * (n + WARMUP):
        raise SystemExit(f"only {len(pool)} single-turn answerable gold items for {3 * (n + WARMUP)} questions")
    rest_url = url.rstrip("/") + "/webhooks/rest/webhook"
    web_url = url.rstrip("/") + "/webhooks/web/"
    run_id = uuid.uuid4().hex[:8]
    series: dict = {"browser": [], "rest": [], "web_json": []}
    kinds: dict = {}
    errors = {"rest": 0, "web_json": 0}
    with sync_playwright() as p:
        browser = Browser(p, web_url)
        _, _, session = post_json(web_url + "session", {})
        auth = {"X-CG81-Session": session["token"]}
        try:
            for i in range(n + WARMUP):
                warm = i < WARMUP
                q_browser, q_rest, q_web = pool[3 * i: 3 * i + 3]
                result = browser.ask(q_browser)
                s_rest, status, _ = post_json(rest_url, {"sender": f"bench-web-{run_id}-{i}", "message": q_rest})
                if status != 200:
                    errors["rest"] += 0 if warm else 1
                # The web channel's own turn, without a browser: a new conversation per question, like the others.
                _, _, fresh = post_json(web_url + "session", {})
                auth = {"X-CG81-Session": fresh["token"]} if fresh else auth
                s_web, status, _ = post_json(web_url + "message", {"message": q_web}, auth)
                if status != 200:
                    errors["web_json"] += 0 if warm else 1
                if warm:
                    continue
                series["browser"].append(result["ms"] / 1000)
                kinds[result["kind"]] = kinds.get(result["kind"], 0) + 1
                series["rest"].append(s_rest)
                series["web_json"].append(s_web)
        finally:
            browser.close()
    return {"n": n, "warmup": WARMUP, "browser": summary_ms(series["browser"]), "rest": summary_ms(series["rest"]),
            "web_json": summary_ms(series["web_json"]), "browser_turn_kinds": kinds, "errors": errors}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="running Rasa server (default: start scripts/serve.sh on free ports)")
    parser.add_argument("--n", type=int, default=50, help="timed questions per series (default 50)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    stack = tmp = None
    url = args.url
    try:
        if not url:
            tmp = tempfile.TemporaryDirectory(prefix="bench-web-")
            stack = Stack(Path(tmp.name), env={"CG81_FEEDBACK_PATH": str(Path(tmp.name) / "feedback.jsonl")})
            print(f"starting scripts/serve.sh on :{stack.rasa_port} (Rasa) and :{stack.actions_port} (actions)")
            print(f"  ready after {stack.start():.1f} s")
            url = stack.base
        print(f"web chat benchmark against {url}: {args.n} questions per series after {WARMUP} warm-up rounds, "
              "one client, sequential, interleaved")
        t0 = time.perf_counter()
        figures = run(url, args.n)
        figures["run_s"] = round(time.perf_counter() - t0, 1)
        figures["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
        b, r, w = figures["browser"], figures["rest"], figures["web_json"]
        print(f"  browser, Enter → answer card painted:  p50 {b['p50_ms']:.0f} ms, p95 {b['p95_ms']:.0f} ms, "
              f"max {b['max_ms']:.0f} ms  (n={b['n']}; turns shown: {figures['browser_turn_kinds']})")
        print(f"  web chat JSON turn (POST /webhooks/web/message): p50 {w['p50_ms']:.0f} ms, p95 {w['p95_ms']:.0f} ms,"
              f" max {w['max_ms']:.0f} ms  (n={w['n']}, errors {figures['errors']['web_json']})")
        print(f"  REST turn (POST /webhooks/rest/webhook):  p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms, "
              f"max {r['max_ms']:.0f} ms  (n={r['n']}, errors {figures['errors']['rest']})")
        print(f"  browser p50 − REST p50: {b['p50_ms'] - r['p50_ms']:+.0f} ms (page: fetch, JSON, rendering, paint); "
              f"run {figures['run_s']:.0f} s, load average now {figures['loadavg_1m_end']}")
        if args.json:
            write_json(args.json, figures)
        return 0
    finally:
        if stack is not None:
            stack.stop()
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
