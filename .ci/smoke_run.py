#!/usr/bin/env python3
"""CI smoke run of the README's first command, `make run`, on a clean clone.

`make run` installs the runtime dependencies only (no test extras) and starts `homeward
demo`; `make test` never runs that path, so it once crashed on a clean clone while every
test passed. This starts it as a user would (the embedded Redis and MQTT broker, only the
HTTP port chosen so a busy 8000 cannot fail it), waits for the API, the login links and the
first incident, then presses Ctrl-C and checks it stops cleanly and tidies up.

Standard library only: it runs before any venv exists.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import IO, TypeVar

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / ".homeward-demo"  # the demo's own data dir
DEMO_ARGS = "--first-after 5 --every 600"
START_S = 300.0  # make run creates the venv and installs before anything listens
LINKS_S = 120.0
INCIDENT_S = 90.0
HEALTHY_S = 30.0
STOP_S = 30.0
# The demo prints its login links (`Dispatcher console: http://…/login#token=…`); before it
# did, it printed `Console: http://…/console` and the token separately.
LOGIN_LINE_MARKERS = ("/login#token=", "Console: http")
# Exit statuses of a Ctrl-C'd `make run`: homeward's 0 or 130, or make killed by the SIGINT
# (then make's `make: *** [Makefile:N: run] Error S` line still tells homeward's status S).
CLEAN_EXITS = (0, 130, -signal.SIGINT)
MAKE_ERROR = re.compile(r"^make(?:\[\d+\])?: \*\*\* \[[^]]*\] Error (\d+)", re.M)
PREFIX = "make run | "

T = TypeVar("T")


class SmokeFailed(Exception):
    pass


class Output:
    """The lines of a stream, echoed with a prefix as they come and kept for the checks."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for raw in stream:
            line = raw.rstrip("\n")
            with self._lock:
                self._lines.append(line)
            print(PREFIX + line, flush=True)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def text(self) -> str:
        with self._lock:
            return "\n".join(self._lines)

    def line_with(self, markers: tuple[str, ...]) -> str | None:
        with self._lock:
            return next((ln for ln in self._lines if any(m in ln for m in markers)), None)


def log(message: str) -> None:
    print(f"smoke: {message}", flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, token: str | None = None) -> tuple[int, str]:
    """Status and body of a GET; an HTTP error status is an answer too."""
    request = urllib.request.Request(url)  # noqa: S310 (http on loopback, built here)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (loopback)
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def wait_for(
    what: str, seconds: float, process: subprocess.Popen[str], check: Callable[[], T | None]
) -> T:
    """Poll ``check`` until it gives a value; fail if `make run` exits or time runs out."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value is not None:
            return value
        if process.poll() is not None:
            raise SmokeFailed(f"`make run` exited ({process.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise SmokeFailed(f"no {what} within {seconds:.0f} s")
        time.sleep(0.5)


def kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def opened_since(incident: dict[str, object], since: float) -> bool:
    """Whether the incident began after ``since`` (a .homeward-demo left by an earlier run
    keeps its incidents; a clean clone has none)."""
    try:
        return datetime.fromisoformat(str(incident["t0"])).timestamp() >= since
    except (KeyError, ValueError):
        return True


def smoke(process: subprocess.Popen[str], output: Output, base: str) -> None:
    started = time.monotonic()
    since = time.time() - 5

    def health() -> int | None:
        try:
            return get(f"{base}/healthz")[0]
        except OSError:  # not listening yet (URLError is an OSError)
            return None

    status = wait_for("answer from /healthz", START_S, process, health)
    log(f"/healthz answered {status} after {time.monotonic() - started:.0f} s")

    line = wait_for(
        "login link in the output", LINKS_S, process, lambda: output.line_with(LOGIN_LINE_MARKERS)
    )
    log(f"login link printed: {line.strip()[:60]}…")

    demo_json = DATA_DIR / "demo.json"

    def dispatcher_token() -> str | None:
        try:
            return str(json.loads(demo_json.read_text())["dispatcher"]) or None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    token = wait_for(f"dispatcher token in {demo_json}", 30, process, dispatcher_token)

    def first_incident() -> dict[str, object] | None:
        try:
            code, body = get(f"{base}/api/v1/incidents?status=all", token)
        except OSError as exc:
            raise SmokeFailed(f"GET /api/v1/incidents failed: {exc}") from None
        if code != 200:
            raise SmokeFailed(f"GET /api/v1/incidents answered {code}: {body[:500]}")
        items = [i for i in json.loads(body).get("items") or [] if opened_since(i, since)]
        return items[0] if items else None

    incident = wait_for("incident", INCIDENT_S, process, first_incident)
    log(f"first incident after {time.monotonic() - started:.0f} s: {json.dumps(incident)[:200]}")

    last_health = ""

    def healthy() -> bool | None:
        nonlocal last_health
        try:
            code, body = get(f"{base}/healthz")
        except OSError as exc:
            code, body = 0, str(exc)
        last_health = f"{code} {body[:800]}"
        return True if code == 200 else None

    try:
        wait_for("200 from /healthz", HEALTHY_S, process, healthy)
    except SmokeFailed as exc:
        raise SmokeFailed(f"{exc}; with the demo running it says: {last_health}") from None

    log("pressing Ctrl-C (SIGINT to the process group)")
    os.killpg(process.pid, signal.SIGINT)
    try:
        code = process.wait(timeout=STOP_S)
    except subprocess.TimeoutExpired:
        raise SmokeFailed(f"`make run` did not stop within {STOP_S:.0f} s of Ctrl-C") from None
    output.join(timeout=10)
    log(f"`make run` exited {code}")
    problems = []
    if code not in CLEAN_EXITS:
        problems.append(f"exit status {code} after Ctrl-C (expected one of {CLEAN_EXITS})")
    for status in MAKE_ERROR.findall(output.text()):
        if int(status) not in CLEAN_EXITS:
            problems.append(
                f"`homeward demo` exited {status} after Ctrl-C (make says Error {status})"
            )
    if "Traceback" in output.text():
        problems.append("a Traceback in the output")
    for name in ("runtime.json", "run.lock"):
        if (DATA_DIR / name).exists():
            problems.append(f"{DATA_DIR.name}/{name} is still there after the stop")
    if problems:
        raise SmokeFailed("; ".join(problems))


def main() -> int:
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEWARD_")}
    env["HOMEWARD_HTTP_PORT"] = str(port)
    env["PYTHONUNBUFFERED"] = "1"  # lines reach the log as they are printed
    argv = ["make", "run", f"DEMO_ARGS={DEMO_ARGS}"]
    log(f"{' '.join(argv)} in {ROOT}, HTTP on {base}")
    started = time.monotonic()
    process = subprocess.Popen(  # noqa: S603 (a fixed command line)
        argv,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        start_new_session=True,  # its own process group: Ctrl-C reaches make and all below
    )
    assert process.stdout is not None
    output = Output(process.stdout)
    try:
        smoke(process, output, base)
    except (SmokeFailed, OSError, ValueError) as exc:
        kill_group(process)
        output.join(timeout=10)
        print(f"\n----- captured output of `make run` -----\n{output.text()}\n-----", flush=True)
        log_file = DATA_DIR / "homeward.log"
        if log_file.exists():
            tail = log_file.read_text(errors="replace").splitlines()[-80:]
            print(f"----- last lines of {log_file} -----", *tail, "-----", sep="\n", flush=True)
        log(f"FAILED after {time.monotonic() - started:.0f} s: {exc}")
        return 1
    finally:
        kill_group(process)
        process.wait()
    log(
        f"ok: `make run` served, showed an incident and stopped cleanly in "
        f"{time.monotonic() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
