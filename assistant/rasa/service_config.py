"""Where conversations and locks live, read from the environment, checked before the server starts.

No Rasa import here, so `python -m assistant.rasa.service_config` checks a deployment's settings in under a
second (scripts/serve.sh and the container entrypoint run it before `rasa run`). The tracker and lock
stores (assistant/rasa/stores.py) call the same checks, so `rasa run` on its own stops with the same line.

Settings (docs/service.md):
  TRACKER_STORE_URL        SQLAlchemy URL: postgresql://user:password@host:5432/db or sqlite:///path.
                           Unset: built from TRACKER_DB_HOST, TRACKER_DB_PORT, TRACKER_DB_NAME,
                           TRACKER_DB_USER, TRACKER_DB_PASSWORD (or TRACKER_DB_PASSWORD_FILE) when
                           TRACKER_DB_HOST is set; else the SQLite file var/tracker.db under the project.
  REDIS_URL                redis://[:password@]host:6379/0 (rediss:// for TLS); set: Redis lock store,
                           so several Rasa replicas can serve the same conversations; unset: in-process
                           locks (one replica only). REDIS_PASSWORD (or REDIS_PASSWORD_FILE) fills in a
                           password the URL leaves out.
  CG81_STORE_WAIT_SECONDS  how long start-up waits for an unreachable database or Redis (default 15)
  CG81_SESSION_MINUTES     session expiry in minutes (overrides domain.yml session_config); 0 = never
  CG81_SESSION_MAX_TURNS   user turns kept in one stored session before it is rolled over (default 10)
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_SQLITE = "sqlite:///var/tracker.db"
DEFAULT_WAIT_SECONDS = 15.0
DEFAULT_MAX_TURNS = 10
CONNECT_TIMEOUT = 3  # seconds, per attempt: PostgreSQL connect_timeout, Redis socket timeouts
EX_CONFIG = 78  # sysexits.h: configuration error


class ConfigurationError(Exception):
    """A setting that cannot work: `setting` names the environment variable, str() is the one line to print."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


def _secret(name: str, env: dict) -> str | None:
    """NAME, or the content of the file NAME_FILE (Kubernetes / Docker secrets mounted as files)."""
    value = env.get(name)
    if value:
        return value
    path = env.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigurationError(f"{name}_FILE", f"cannot read {path} ({exc.strerror})") from None
    return None


def _float(name: str, env: dict, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(name, f"'{raw}' is not a number") from None
    if value < 0:
        raise ConfigurationError(name, f"'{raw}' must not be negative")
    return value


def wait_seconds(env: dict | None = None) -> float:
    return _float("CG81_STORE_WAIT_SECONDS", os.environ if env is None else env, DEFAULT_WAIT_SECONDS)


def session_minutes(env: dict | None = None) -> float | None:
    """CG81_SESSION_MINUTES, or None when unset (domain.yml's session_config applies)."""
    env = os.environ if env is None else env
    if not (env.get("CG81_SESSION_MINUTES") or "").strip():
        return None
    return _float("CG81_SESSION_MINUTES", env, 0)


def max_turns(env: dict | None = None) -> int:
    value = _float("CG81_SESSION_MAX_TURNS", os.environ if env is None else env, DEFAULT_MAX_TURNS)
    if value < 1 or value != int(value):
        raise ConfigurationError("CG81_SESSION_MAX_TURNS", f"'{value:g}' must be a whole number of at least 1")
    return int(value)


# ---------------------------------------------------------------------- the tracker store (SQL)
@dataclass(frozen=True)
class DatabaseSettings:
    url: str          # with the password, for SQLAlchemy only
    setting: str      # the variable to name in an error
    dialect: str      # "postgresql" or "sqlite"
    shown: str        # the URL without the password, for logs and the health endpoint


def database_settings(env: dict | None = None) -> DatabaseSettings:
    """The tracker store's database from the environment (see the module docstring); ConfigurationError
    for a URL that cannot work, before any connection is tried."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    env = os.environ if env is None else env
    setting = "TRACKER_STORE_URL"
    raw = (env.get("TRACKER_STORE_URL") or "").strip()
    if not raw and (env.get("TRACKER_DB_HOST") or "").strip():
        setting = "TRACKER_DB_HOST"
        user = env.get("TRACKER_DB_USER") or ""
        password = _secret("TRACKER_DB_PASSWORD", env) or ""
        port = (env.get("TRACKER_DB_PORT") or "5432").strip()
        if not port.isdigit():
            raise ConfigurationError("TRACKER_DB_PORT", f"'{port}' is not a port number")
        auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "") + ("@" if user else "")
        raw = (f"postgresql://{auth}{env['TRACKER_DB_HOST'].strip()}:{port}/"
               f"{quote(env.get('TRACKER_DB_NAME') or 'rasa', safe='')}")
    if not raw:
        raw = DEFAULT_SQLITE
    try:
        url = make_url(raw)
    except ValueError:  # a port that is not a number
        raise ConfigurationError(setting, "the port is not a number") from None
    except ArgumentError:
        raise ConfigurationError(setting, "not a database URL (expected postgresql://user:password@host:5432/db "
                                          "or sqlite:///path/to/file.db)") from None
    dialect = url.get_backend_name()
    if dialect == "postgres":  # Heroku-style spelling that SQLAlchemy 1.4 no longer accepts
        url = url.set(drivername="postgresql")
        dialect = "postgresql"
    if dialect == "postgresql":
        if url.get_driver_name() not in ("psycopg2", None, ""):
            raise ConfigurationError(setting, f"driver '{url.get_driver_name()}' is not installed; "
                                              "use postgresql:// (psycopg2)")
        if not url.host:
            raise ConfigurationError(setting, "no host in the PostgreSQL URL")
        if not url.database:
            raise ConfigurationError(setting, "no database name in the PostgreSQL URL")
        if not url.username:
            raise ConfigurationError(setting, "no user name in the PostgreSQL URL (credentials are missing)")
        if url.password is None:
            password = _secret("TRACKER_DB_PASSWORD", env)
            if password:
                url = url.set(password=password)
        try:
            url.port  # noqa: B018 - a non-numeric port raises here
        except ValueError:
            raise ConfigurationError(setting, "the port is not a number") from None
    elif dialect == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:"):
            raise ConfigurationError(setting, "an in-memory SQLite database would lose every conversation on "
                                              "restart; give a file, e.g. sqlite:///var/tracker.db")
        path = Path(database)
        if not path.is_absolute():
            path = ROOT / path
        url = url.set(database=str(path))
    else:
        raise ConfigurationError(setting, f"unsupported database '{dialect}': use postgresql:// or sqlite:///")
    return DatabaseSettings(url.render_as_string(hide_password=False), setting, dialect,
                            url.render_as_string(hide_password=True))


def engine_options(db: DatabaseSettings) -> dict:
    """create_engine() keyword arguments: short connect timeouts, stale connections detected after a
    database restart, a bounded pool."""
    if db.dialect == "sqlite":
        # One file, one writer at a time: wait for the lock rather than fail at once.
        return {"connect_args": {"timeout": 15, "check_same_thread": False}}
    options = f"-c statement_timeout={int(os.environ.get('CG81_DB_STATEMENT_TIMEOUT_MS', '10000'))}"
    schema = os.environ.get("POSTGRESQL_SCHEMA")
    if schema:
        options += f" -c search_path={schema}"
    return {"pool_pre_ping": True, "pool_size": int(os.environ.get("SQL_POOL_SIZE", "5")),
            "max_overflow": int(os.environ.get("SQL_MAX_OVERFLOW", "10")), "pool_timeout": 10,
            "connect_args": {"connect_timeout": CONNECT_TIMEOUT, "options": options,
                             "application_name": "cg81-rasa"}}


def _database_problem(exc: Exception, db: DatabaseSettings) -> tuple:
    """(retry?, one-line reason) for a failed connection."""
    from sqlalchemy.engine import make_url

    text = " ".join(str(getattr(exc, "orig", None) or exc).split())
    lowered = text.lower()
    if db.dialect == "sqlite":
        return False, f"cannot open the SQLite file {make_url(db.url).database} ({text})"
    url = make_url(db.url)
    where = f"PostgreSQL at {url.host}:{url.port or 5432}"
    if "password authentication failed" in lowered or "authentication failed" in lowered:
        return False, f"{where} rejected the credentials of user '{url.username}'"
    if "no password supplied" in lowered or "password is required" in lowered:
        return False, f"{where} needs a password for user '{url.username}' and none was given " \
                      "(set it in the URL or TRACKER_DB_PASSWORD)"
    if "does not exist" in lowered and "database" in lowered:
        return False, f"database '{url.database}' does not exist on {where}"
    if "role" in lowered and "does not exist" in lowered:
        return False, f"user '{url.username}' does not exist on {where}"
    if "could not translate host name" in lowered or "name or service not known" in lowered:
        return True, f"host '{url.host}' cannot be resolved"
    if "connection refused" in lowered:
        return True, f"cannot reach {where} (connection refused)"
    if "timeout" in lowered or "timed out" in lowered:
        return True, f"cannot reach {where} (timed out)"
    return True, f"cannot connect to {where} ({text[:160]})"


def connect_database(db: DatabaseSettings, wait: float | None = None):
    """A SQLAlchemy engine whose database answered `SELECT 1`; retries unreachable servers for `wait`
    seconds, never bad credentials. ConfigurationError naming the setting otherwise."""
    import sqlalchemy as sa

    wait = wait_seconds() if wait is None else wait
    if db.dialect == "sqlite":
        from sqlalchemy.engine import make_url

        path = Path(make_url(db.url).database)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(db.setting, f"cannot create the directory {path.parent} ({exc.strerror})") \
                from None
    engine = sa.create_engine(db.url, **engine_options(db))
    deadline = time.monotonic() + wait
    while True:
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return engine
        except Exception as exc:  # noqa: BLE001 - every driver error becomes one line
            retry, reason = _database_problem(exc, db)
            if not retry or time.monotonic() >= deadline:
                engine.dispose()
                raise ConfigurationError(db.setting, reason + (f" after {wait:.0f} s" if retry and wait else "")) \
                    from None
            time.sleep(1.0)


# ---------------------------------------------------------------------- the lock store (Redis)
@dataclass(frozen=True)
class RedisSettings:
    url: str
    shown: str


def redis_settings(env: dict | None = None) -> RedisSettings | None:
    """REDIS_URL, checked for shape; None when unset (in-process locks, one replica)."""
    env = os.environ if env is None else env
    raw = (env.get("REDIS_URL") or "").strip()
    if not raw:
        return None
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise ConfigurationError("REDIS_URL", "the port is not a number") from None
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigurationError("REDIS_URL", "not a Redis URL (expected redis://[:password@]host:6379/0 or rediss://)")
    if not parts.hostname:
        raise ConfigurationError("REDIS_URL", "no host in the Redis URL")
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise ConfigurationError("REDIS_URL", f"database '{db}' is not a number")
    url = raw
    if parts.password is None:
        password = _secret("REDIS_PASSWORD", env)
        if password:
            user = quote(parts.username or "", safe="")
            netloc = f"{user}:{quote(password, safe='')}@{parts.hostname}" + (f":{port}" if port else "")
            url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    shown = f"{parts.scheme}://{parts.hostname}:{port or 6379}/{db or 0}"
    return RedisSettings(url, shown)


def redis_client(settings: RedisSettings, timeout: float = CONNECT_TIMEOUT):
    import redis

    return redis.StrictRedis.from_url(settings.url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                      health_check_interval=30)


def connect_redis(settings: RedisSettings, wait: float | None = None):
    """A Redis client whose server answered PING; ConfigurationError naming REDIS_URL otherwise."""
    import redis

    wait = wait_seconds() if wait is None else wait
    client = redis_client(settings)
    where = settings.shown
    deadline = time.monotonic() + wait
    while True:
        try:
            client.ping()
            return client
        except redis.exceptions.AuthenticationError as exc:
            reason = f"Redis at {where} rejected the credentials" if "invalid" in str(exc).lower() or \
                "wrong" in str(exc).lower() else f"Redis at {where} needs a password and none was given"
            raise ConfigurationError("REDIS_URL", reason) from None
        except redis.exceptions.ResponseError as exc:
            if "noauth" in str(exc).lower():
                raise ConfigurationError("REDIS_URL", f"Redis at {where} needs a password and none was given") \
                    from None
            raise ConfigurationError("REDIS_URL", f"Redis at {where} answered with an error ({exc})") from None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            text = " ".join(str(exc).split())
            lowered = text.lower()
            if "auth" in lowered and ("password" in lowered or "invalid" in lowered):
                raise ConfigurationError("REDIS_URL", f"Redis at {where} rejected the credentials") from None
            if time.monotonic() >= deadline:
                reason = "connection refused" if "refused" in lowered else \
                    "timed out" if "timeout" in lowered or "timed out" in lowered else text[:160]
                raise ConfigurationError("REDIS_URL", f"cannot reach Redis at {where} ({reason})"
                                                      + (f" after {wait:.0f} s" if wait else "")) from None
            time.sleep(1.0)


def check(env: dict | None = None, wait: float | None = None) -> list:
    """Every store setting checked and connected to; the lines to print (raises ConfigurationError)."""
    env = os.environ if env is None else env
    session_minutes(env)
    max_turns(env)
    db = database_settings(env)
    connect_database(db, wait).dispose()
    lines = [f"tracker store: {db.shown}"]
    red = redis_settings(env)
    if red is None:
        lines.append("lock store: in-process (REDIS_URL unset: one Rasa replica only)")
    else:
        connect_redis(red, wait).close()
        lines.append(f"lock store: Redis at {red.shown}")
    return lines


def render_endpoints(source: Path, target: Path, env: dict | None = None) -> None:
    """endpoints.yml for a container: ACTION_ENDPOINT_URL (the action servers' one address) replaces the
    local action URL, and every ${NAME} is filled in from the environment (Rasa 3.6 does not expand them).
    Written with mode 600: it may hold the action server's token."""
    import re

    env = os.environ if env is None else env
    text = source.read_text(encoding="utf-8")
    url = (env.get("ACTION_ENDPOINT_URL") or "").strip()
    if url:
        text = re.sub(r'(action_endpoint:\s*\n\s+url:\s*)"[^"]*"', lambda m: f'{m.group(1)}"{url}"', text, count=1)
    lines = [line for line in text.splitlines(keepends=True) if not line.lstrip().startswith("#")]
    missing = sorted({name for line in lines for name in re.findall(r"\$\{(\w+)\}", line) if not env.get(name)})
    if missing:
        raise ConfigurationError(missing[0], f"must be set: {source.name} refers to it")
    text = "".join(re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], line) for line in lines)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def main(argv: list | None = None) -> int:
    """`python -m assistant.rasa.service_config [--quiet] [--endpoints SRC DST]`: check the settings (and
    render the endpoints file); exit 78 with one line if one is wrong."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if "--endpoints" in argv:
            i = argv.index("--endpoints")
            render_endpoints(Path(argv[i + 1]), Path(argv[i + 2]))
        lines = check()
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        print(f"configuration error: the store settings could not be checked ({type(exc).__name__}: {exc})",
              file=sys.stderr)
        return EX_CONFIG
    if "--quiet" not in argv:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
