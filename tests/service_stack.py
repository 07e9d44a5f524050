"""The service topology as local processes, for tests/test_service.py and benchmarks/bench_service.py.

PostgreSQL (Debian's server binaries; run as `nobody` when we are root), Redis (Debian's redis-server),
nginx (Debian's; deploy/docker/nginx.conf with the host names replaced by local ports), N action servers
(.venv, rasa-sdk) and N Rasa replicas (.venv-rasa). Every process runs in its own session in one temporary
directory and is stopped by `Stack.close()` (also on failure: use it as a context manager), by process
group, never by name. `make install-service-deps` installs the Debian packages.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from scripts.wait_ready import WARM_UP  # the same warm-up call serve.sh makes

ROOT = Path(__file__).resolve().parent.parent
MODEL = Path(os.environ.get("RASA_MODEL", ROOT / "models" / "cg81.tar.gz"))
NGINX_CONF = ROOT / "deploy" / "docker" / "nginx.conf"
INSTALL_HINT = "run `make install-service-deps` (apt-get install postgresql redis-server nginx)"
BASE_ENV = {"RASA_TELEMETRY_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "3", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1",
            "SQLALCHEMY_SILENCE_UBER_WARNING": "1", "SANIC_HOST": "127.0.0.1",  # action servers on loopback
            "CG81_DEV_MODE": "1"}  # REST without a token, from loopback only (the stack binds to loopback)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(condition, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


def http(method: str, url: str, body: dict | None = None, timeout: float = 120, headers: dict | None = None):
    """(status, parsed JSON or text); status 0 when the connection failed."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    except (OSError, urllib.error.URLError):
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def say(base: str, sender: str, text: str, timeout: float = 120) -> list:
    status, body = http("POST", f"{base}/webhooks/rest/webhook", {"sender": sender, "message": text}, timeout)
    if status != 200:
        raise AssertionError(f"POST to {base} gave {status}: {body}")
    return body


def payload(messages: list) -> dict | None:
    return next((m["custom"] for m in messages if isinstance(m.get("custom"), dict)), None)


def text_of(messages: list) -> str:
    return "\n\n".join(m["text"] for m in messages if m.get("text"))


class Proc:
    """One child process in its own session; output to a log file."""

    def __init__(self, name: str, args: list, log: Path, env: dict | None = None, cwd: Path = ROOT,
                 user: str | None = None) -> None:
        self.name, self.args, self.log, self.env, self.cwd, self.user = name, args, log, env, cwd, user
        self.proc: subprocess.Popen | None = None

    def start(self) -> Proc:
        log = open(self.log, "ab")
        args = self.args
        if self.user:
            ent = pwd.getpwnam(self.user)
            args = ["setpriv", f"--reuid={ent.pw_uid}", f"--regid={ent.pw_gid}", "--clear-groups", *args]
        self.proc = subprocess.Popen(args, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL: the process dies mid-work, as in a crash."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.signal(signal.SIGKILL)  # anything the process left in its group

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


# ---------------------------------------------------------------------- PostgreSQL
def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("pg_ctl")
    return Path(which).resolve().parent if which else None


class Postgres:
    """A throw-away cluster: scram-sha-256 over TCP on 127.0.0.1, fsync off (tests only)."""

    user = "cg81"
    database = "cg81"

    def __init__(self, workdir: Path) -> None:
        bindir = pg_bin()
        if bindir is None:
            raise RuntimeError(f"PostgreSQL server binaries not found: {INSTALL_HINT}")
        self.bin = bindir
        self.dir = workdir / "pg"
        self.port = free_port()
        self.password = uuid.uuid4().hex
        self.os_user = "nobody" if os.geteuid() == 0 else None

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(a) for a in args]
        if self.os_user:
            ent = pwd.getpwnam(self.os_user)
            cmd = ["setpriv", f"--reuid={ent.pw_uid}", f"--regid={ent.pw_gid}", "--clear-groups", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd="/")
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[-len(args):][:2])} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def init(self) -> Postgres:
        self.dir.mkdir(parents=True)
        pwfile = self.dir.parent / "pg.pw"
        pwfile.write_text(self.password)
        if self.os_user:
            ent = pwd.getpwnam(self.os_user)
            for path in (self.dir, pwfile):
                os.chown(path, ent.pw_uid, ent.pw_gid)
        self._run(self.bin / "initdb", "-D", self.dir / "data", "-U", self.user, "--pwfile", pwfile,
                  "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-locale", "--no-sync")
        pwfile.unlink()
        return self

    def start(self) -> Postgres:
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c shared_buffers=64MB -c max_connections=200")
        self._run(self.bin / "pg_ctl", "-D", self.dir / "data", "-o", opts, "-l", self.dir / "server.log",
                  "-w", "-t", "60", "start")
        if not getattr(self, "_created", False):
            self._run(self.bin / "psql", "-h", self.dir, "-p", self.port, "-U", self.user, "-d", "postgres",
                      "-q", "-c", f"CREATE DATABASE {self.database}")
            self._created = True
        return self

    def stop(self) -> None:
        if (self.dir / "data" / "postmaster.pid").exists():
            self._run(self.bin / "pg_ctl", "-D", self.dir / "data", "-m", "fast", "-w", "-t", "60", "stop",
                      check=False)

    def url(self, password: str | None = None, user: str | None = None) -> str:
        pw = self.password if password is None else password
        auth = f"{user or self.user}" + (f":{pw}" if pw else "")
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{self.database}"


# ---------------------------------------------------------------------- Redis
class Redis:
    def __init__(self, workdir: Path, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(f"redis-server not found: {INSTALL_HINT}")
        self.binary = binary
        self.port = free_port()
        self.password = password or uuid.uuid4().hex
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: Proc | None = None

    def start(self) -> Redis:
        self.proc = Proc("redis", [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", str(self.dir), "--requirepass", self.password],
                         self.dir / "redis.log").start()
        wait_for(lambda: port_open(self.port), 30, "redis-server")
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()

    def url(self, password: bool = True) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0" if password else \
            f"redis://127.0.0.1:{self.port}/0"


# ---------------------------------------------------------------------- nginx
def render_nginx(rasa_ports: list, action_ports: list, front_port: int, actions_port: int, tmp: Path) -> str:
    """deploy/docker/nginx.conf for local ports: host names → 127.0.0.1, /tmp → our directory."""
    conf = NGINX_CONF.read_text()
    for i, port in enumerate(rasa_ports, 1):
        conf = conf.replace(f"server rasa-{i}:5005", f"server 127.0.0.1:{port}")
    for i, port in enumerate(action_ports, 1):
        conf = conf.replace(f"server actions-{i}:5055", f"server 127.0.0.1:{port}")
    # More replicas than the file names: add them after the last one.
    conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{front_port};")
    conf = conf.replace("listen 5055;", f"listen 127.0.0.1:{actions_port};")
    conf = conf.replace("/tmp/", f"{tmp}/")
    conf = conf.replace("access_log /dev/stdout cg81;", f"access_log {tmp}/access.log cg81;")
    conf = conf.replace("worker_processes auto;", "worker_processes 1;")
    if re.search(r"server (rasa|actions)-\d", conf):
        raise RuntimeError("nginx.conf names more replicas than the test stack runs")
    return conf


class Nginx:
    def __init__(self, workdir: Path, rasa_ports: list, action_ports: list) -> None:
        binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
        if binary is None:
            raise RuntimeError(f"nginx not found: {INSTALL_HINT}")
        self.binary = binary
        self.dir = workdir / "nginx"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.front_port, self.actions_port = free_port(), free_port()
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(render_nginx(rasa_ports, action_ports, self.front_port, self.actions_port, self.dir))
        self.proc: Proc | None = None

    def test_config(self) -> subprocess.CompletedProcess:
        return subprocess.run([self.binary, "-t", "-q", "-p", str(self.dir), "-c", str(self.conf)],
                              capture_output=True, text=True, timeout=30)

    def start(self) -> Nginx:
        self.proc = Proc("nginx", [self.binary, "-p", str(self.dir), "-c", str(self.conf), "-g", "daemon off;"],
                         self.dir / "nginx.log").start()
        wait_for(lambda: port_open(self.front_port) and port_open(self.actions_port), 30, "nginx")
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()


# ---------------------------------------------------------------------- the assistant's servers
def endpoints_file(path: Path, actions_port: int, token: str) -> Path:
    """endpoints.yml with the action server's port (what scripts/serve.sh does) and token filled in: a
    private file (mode 600) in the stack's directory."""
    text = (ROOT / "endpoints.yml").read_text().replace("${ACTIONS_PORT}", str(actions_port))
    if "CG81_ACTION_TOKEN" not in text and (ROOT / "rasa_sdk_plugins").exists():
        # The action server requires the shared token (rasa_sdk_plugins): send it if endpoints.yml does not.
        text = re.sub(r'(action_endpoint:\n  url: "[^"]*"\n)',
                      r'\1  headers:\n    Authorization: "Bearer ${CG81_ACTION_TOKEN}"\n', text)
    path.write_text(text.replace("${CG81_ACTION_TOKEN}", token))
    path.chmod(0o600)
    return path


class ActionServer(Proc):
    def __init__(self, name: str, workdir: Path, env: dict) -> None:
        self.port = free_port()
        super().__init__(name, [str(ROOT / ".venv/bin/python"), "-m", "rasa_sdk", "--actions", "actions",
                                "--port", str(self.port)], workdir / f"{name}.log", env)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        return self.alive and http("GET", f"{self.base}/health", timeout=5)[0] == 200


class RasaServer(Proc):
    def __init__(self, name: str, workdir: Path, env: dict, endpoints: Path, model: Path = MODEL,
                 port: int | None = None) -> None:
        self.port = port or free_port()
        super().__init__(name, [str(ROOT / ".venv-rasa/bin/rasa"), "run", "--model", str(model), "--endpoints",
                                str(endpoints), "--credentials", str(ROOT / "credentials.yml"), "--port",
                                str(self.port), "--interface", "127.0.0.1"], workdir / f"{name}.log", env)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        if not self.alive:
            raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
        return http("GET", f"{self.base}/webhooks/health/ready", timeout=5)[0] == 200

    def health(self) -> tuple:
        return http("GET", f"{self.base}/webhooks/health/", timeout=30)


def action_token() -> str:
    return os.environ.get("CG81_ACTION_TOKEN") or uuid.uuid4().hex


class Stack:
    """PostgreSQL or SQLite, optional Redis and nginx, `actions` action servers, `replicas` Rasa servers.

    With `proxy`, Rasa reaches the action servers through nginx (one address) and clients can use
    `front` (nginx → Rasa replicas); without it, Rasa calls the first action server directly."""

    def __init__(self, replicas: int = 2, actions: int = 2, postgres: bool = True, redis: bool = True,
                 proxy: bool = True, env: dict | None = None, model: Path = MODEL) -> None:
        if not model.exists():
            raise RuntimeError(f"no trained model at {model}: run `make train` first")
        self.tmp = Path(tempfile.mkdtemp(prefix="cg81-service-"))
        os.chmod(self.tmp, 0o755)  # PostgreSQL runs as nobody below it
        self.model = model
        self.n_replicas, self.n_actions = replicas, actions
        self.pg = Postgres(self.tmp) if postgres else None
        self.redis = Redis(self.tmp) if redis else None
        self.token = action_token()
        self.extra_env = dict(env or {})
        self.action_servers: list = []
        self.replicas: list = []
        self.nginx: Nginx | None = None
        self.proxy = proxy
        self.sqlite_path = self.tmp / "tracker.db"

    # -- environment
    def env(self, **overrides: str) -> dict:
        env = dict(os.environ, **BASE_ENV, CG81_ACTION_TOKEN=self.token, CG81_STORE_WAIT_SECONDS="5")
        env["TRACKER_STORE_URL"] = self.pg.url() if self.pg else f"sqlite:///{self.sqlite_path}"
        if self.redis:
            env["REDIS_URL"] = self.redis.url()
        else:
            env.pop("REDIS_URL", None)
        env.update(self.extra_env)
        env.update(overrides)
        return env

    @property
    def front(self) -> str:
        return f"http://127.0.0.1:{self.nginx.front_port}" if self.nginx else self.replicas[0].base

    # -- lifecycle
    def start(self, timeout: float = 300) -> Stack:
        try:
            if self.pg:
                self.pg.init().start()
            if self.redis:
                self.redis.start()
            self.action_servers = [ActionServer(f"actions-{i + 1}", self.tmp, self.env())
                                   for i in range(self.n_actions)]
            rasa_ports = [free_port() for _ in range(self.n_replicas)]
            if self.proxy:
                self.nginx = Nginx(self.tmp, rasa_ports, [a.port for a in self.action_servers])
                checked = self.nginx.test_config()
                if checked.returncode != 0:
                    raise RuntimeError(f"nginx -t failed:\n{checked.stderr}")
                self.nginx.start()
                actions_address = self.nginx.actions_port
            else:
                actions_address = self.action_servers[0].port
            self.endpoints = endpoints_file(self.tmp / "endpoints.yml", actions_address, self.token)
            self.replicas = [RasaServer(f"rasa-{i + 1}", self.tmp, self.env(), self.endpoints, self.model, port)
                             for i, port in enumerate(rasa_ports)]
            for server in self.action_servers:
                server.start()
            for server in self.replicas:
                server.start()
            self.wait_ready(timeout)
            self.warm_up()
            return self
        except BaseException:
            self.close()
            raise

    def wait_ready(self, timeout: float = 300) -> None:
        def all_ready() -> bool:
            return all(a.ready() for a in self.action_servers if a.alive) and all(r.ready() for r in self.replicas
                                                                                if r.proc is not None)

        try:
            wait_for(all_ready, timeout, "service stack ready", interval=0.5)
        except TimeoutError:
            raise RuntimeError("stack not ready:\n" + self.logs()) from None

    def warm_up(self) -> None:
        """One action call per action server, so the first test turn does not pay for loading the core."""
        for server in self.action_servers:
            if server.alive:
                http("POST", f"{server.base}/webhook", WARM_UP, timeout=180,
                     headers={"Authorization": f"Bearer {self.token}"})

    def restart_replica(self, index: int, timeout: float = 300, **env: str) -> RasaServer:
        old = self.replicas[index]
        old.stop()
        wait_for(lambda: not port_open(old.port), 30, f"{old.name} port closed")
        new = RasaServer(old.name, self.tmp, self.env(**env), self.endpoints, self.model, old.port)
        self.replicas[index] = new.start()
        wait_for(new.ready, timeout, f"{new.name} ready", interval=0.5)
        return new

    def start_action_server(self, index: int, timeout: float = 180) -> ActionServer:
        old = self.action_servers[index]
        old.stop()
        new = ActionServer(old.name, self.tmp, self.env())
        new.port = old.port
        new.args[-1] = str(old.port)
        self.action_servers[index] = new.start()
        wait_for(new.ready, timeout, f"{new.name} ready", interval=0.5)
        http("POST", f"{new.base}/webhook", WARM_UP, timeout=180, headers={"Authorization": f"Bearer {self.token}"})
        return new

    def logs(self) -> str:
        parts = []
        for proc in [*self.action_servers, *self.replicas]:
            parts.append(f"--- {proc.name}\n{proc.tail()}")
        if self.pg and (self.pg.dir / "server.log").exists():
            parts.append("--- postgres\n" + (self.pg.dir / "server.log").read_text(errors="replace")[-2000:])
        return "\n".join(parts)

    def close(self) -> None:
        for proc in [*self.replicas, *self.action_servers]:
            try:
                proc.stop()
            except Exception:  # noqa: BLE001 - stop everything we can
                pass
        for service in (self.nginx, self.redis, self.pg):
            if service is not None:
                try:
                    service.stop()
                except Exception:  # noqa: BLE001
                    pass
        if os.environ.get("CG81_KEEP_SERVICE_TMP"):
            print(f"service stack files kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the tracker store, read directly
    def engine(self):
        import sqlalchemy as sa

        return sa.create_engine(self.env()["TRACKER_STORE_URL"], poolclass=sa.pool.NullPool)

    def events(self, sender: str) -> list:
        """Every stored event of a conversation, in id order (all sessions)."""
        import sqlalchemy as sa

        engine = self.engine()
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.text("SELECT data FROM events WHERE sender_id = :s ORDER BY id"),
                                    {"s": sender}).fetchall()
        finally:
            engine.dispose()
        return [json.loads(r[0]) for r in rows]


def user_texts(events: list) -> list:
    return [e.get("text") for e in events if e.get("event") == "user"]


def turns_well_formed(events: list) -> list:
    """Problems in a stored conversation: every user message must be followed by at least one action and
    end with action_listen before the next user message (no interleaved or half-saved turn)."""
    problems, open_turn, acted = [], False, False
    for i, e in enumerate(events):
        kind = e.get("event")
        if kind == "user":
            if open_turn:
                problems.append(f"event {i}: user message before the previous turn ended")
            open_turn, acted = True, False
        elif kind == "action" and open_turn:
            if e.get("name") == "action_listen":
                if not acted:
                    problems.append(f"event {i}: turn ended without an action")
                open_turn = False
            else:
                acted = True
    if open_turn:
        problems.append("last turn never ended")
    return problems
