"""The real servers for tests and scripts: scripts/serve.sh (action server + Rasa) on free ports.

A helper, not a test module: the browser tests, the screenshot script and the web benchmark start the
stack through it, and can stop and start it again on the same ports (the "server went away" scenario).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "cg81.tar.gz"


def free_port(avoid: set | None = None) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in (avoid or set()):
            return port


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Stack:
    """scripts/serve.sh in its own process group; ready when it prints its "ready:" line."""

    def __init__(self, workdir: Path, env: dict | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.rasa_port = free_port()
        self.actions_port = free_port({self.rasa_port})
        # Conversations in a database of this stack's own (when the SQL tracker store is configured), so
        # tests neither read nor leave conversations in the developer's var/tracker.db.
        self.env = {"TRACKER_STORE_URL": f"sqlite:///{self.workdir / 'tracker.db'}", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self._out = None
        self.starts = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.rasa_port}"

    @property
    def web(self) -> str:
        return f"{self.base}/webhooks/web/"

    def output(self) -> str:
        path = self.workdir / f"serve-{self.starts}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted((self.workdir / "logs").glob("*.log")))

    def start(self, timeout: float = 240) -> float:
        """Start and wait for readiness; the seconds it took. RuntimeError (with the logs) if it fails."""
        if not MODEL.exists():
            raise RuntimeError("no trained model at models/cg81.tar.gz: run `make train` first")
        self.starts += 1
        env = dict(os.environ, **self.env, RASA_PORT=str(self.rasa_port), ACTIONS_PORT=str(self.actions_port),
                   LOG_DIR=str(self.workdir / "logs"), READY_TIMEOUT=str(int(timeout)))
        self._out = open(self.workdir / f"serve-{self.starts}.out", "w")
        t0 = time.monotonic()
        self.proc = subprocess.Popen([str(ROOT / "scripts" / "serve.sh")], cwd=ROOT, env=env, stdout=self._out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        while time.monotonic() - t0 < timeout + 30:
            if any(line.startswith("ready:") for line in self.output().splitlines()):
                return time.monotonic() - t0
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        out = self.output()
        self.stop()
        raise RuntimeError(f"servers did not start:\n{out[-2000:]}\n{self.logs()}")

    def smoke_test(self) -> str | None:
        """None if a REST question gets a guideline answer; else what came back (so a broken stack fails once,
        up front, instead of every test timing out on its own)."""
        import json
        import urllib.request

        body = json.dumps({"sender": "smoke-test", "message": "should I monitor with PET-CT?"}).encode()
        req = urllib.request.Request(f"{self.base}/webhooks/rest/webhook", data=body,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                messages = json.loads(resp.read())
        except (OSError, ValueError) as exc:
            return f"REST turn failed: {exc}"
        if any(isinstance(m.get("custom"), dict) and m["custom"].get("answers") for m in messages):
            return None
        return f"no guideline answer in {messages!r:.300}"

    def stop(self) -> None:
        """SIGTERM to the group (serve.sh stops both servers); SIGKILL if that takes over 30 s."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 15
        while (port_open(self.rasa_port) or port_open(self.actions_port)) and time.monotonic() < deadline:
            time.sleep(0.2)
        if self._out:
            self._out.close()
        self.proc = None


# ---------------------------------------------------------------------- the browser
# Debian's Chromium (Playwright's own browser download does not work offline). Headless with the network
# closed: background networking would only flood the log with refused connections.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
AXE_JS = ROOT / "build" / "web-tools" / "node_modules" / "axe-core" / "axe.min.js"
INSTALL_HINT = "run `make install-browser` (apt-get install chromium; npm axe-core into build/web-tools)"


def chromium_path() -> str | None:
    """CG81_CHROMIUM, else Debian's /usr/bin/chromium, else a chromium or chrome on PATH."""
    import shutil

    for candidate in (os.environ.get("CG81_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def launch_chromium(playwright):
    path = chromium_path()
    if path is None:
        raise RuntimeError(f"no Chromium found: {INSTALL_HINT}, or set CG81_CHROMIUM")
    return playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
