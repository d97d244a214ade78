"""`homeward demo` and start-up as a new user meets them: links that log in, a terminal for
people (the log in a file, no secrets), a clean stop, a failed start that cleans up, and
one-shot commands that find the running demo from the same folder."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from locator.core.logging import mask_secrets
from locator.embedded import free_port, pid_alive
from tests.test_cli import _env, _homeward, homeward_run


def _wait_for_line(path: Path, pattern: str, process: subprocess.Popen[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text()
        if re.search(pattern, text):
            return text
        assert process.poll() is None, text
        time.sleep(0.2)
    pytest.fail(f"no line matching {pattern!r} in:\n{path.read_text()}")


def _start_demo(cwd: Path, port: int, out: Path, *args: str) -> subprocess.Popen[str]:
    with out.open("w") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "locator", "demo", "--elders", "4", *args],
            cwd=cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(HOMEWARD_HTTP_PORT=str(port)),
            start_new_session=True,
        )


def _ctrl_c(process: subprocess.Popen[str]) -> int:
    os.killpg(process.pid, signal.SIGINT)
    return process.wait(timeout=30)


def _link(text: str, who: str) -> str:
    match = re.search(rf"{who}[^\n]*?: (http://\S+/login#token=(\S+))", text)
    assert match, text
    return match.group(2)


def test_demo_prints_working_links_a_summary_and_stops_clean(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    out = tmp_path / "out.txt"
    demo = _start_demo(tmp_path, port, out, "--first-after", "2", "--every", "600")
    try:
        text = _wait_for_line(out, r"incident \d+ \(张阿公\) opened", demo, timeout=90)
        dispatcher, family, volunteer = (
            _link(text, k) for k in ("Dispatcher console", "Family portal", "Volunteer page")
        )
        # The same folder's one-shot commands find the running demo (no HOMEWARD_DATA_DIR).
        minted = subprocess.run(
            [sys.executable, "-m", "locator", "token", "create", "--role", "admin"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=_env(),
            timeout=60,
            check=False,
        )
        assert minted.returncode == 0, minted.stderr
        assert ".homeward-demo" in minted.stderr
        assert not (tmp_path / ".homeward").exists()

        def get(path: str, token: str) -> httpx.Response:
            return httpx.get(f"{base}{path}", headers={"Authorization": f"Bearer {token}"})

        assert get("/api/v1/elders", minted.stdout.strip()).status_code == 200
        assert get("/api/v1/elders", dispatcher).json()["items"]
        family_elders = get("/api/v1/elders", family).json()["items"]
        assert sorted(e["name"] for e in family_elders) == ["张阿公", "张阿婆"]
        # The printed volunteer is paired with the elder who walked out: sent to her.
        mine = get("/api/v1/incidents?status=open", volunteer).json()["items"]
        assert [i["elder_name"] for i in mine] == ["张阿公"]
        # The family sees it too.
        theirs = get("/api/v1/incidents?status=open", family).json()["items"]
        assert [i["elder_name"] for i in theirs] == ["张阿公"]
        # The third and fourth elders wear GT06 and JT/T 808 bracelets: fixes via the gateway.
        devices = get("/api/v1/devices?limit=100", dispatcher).json()["items"]
        gateway = sorted((d for d in devices if d["protocol"] != "native"), key=str)
        assert sorted(d["protocol"] for d in gateway) == ["gt06", "jt808"], devices
        for device in gateway:
            position = get(f"/api/v1/elders/{device['elder_id']}/position", dispatcher)
            assert position.status_code == 200, (device, position.text)
    finally:
        code = _ctrl_c(demo)
    text = out.read_text()
    assert code in (0, 130), text
    assert "Traceback" not in text
    data = tmp_path / ".homeward-demo"
    assert not (data / "runtime.json").exists()
    assert not (data / "run.lock").exists()
    # The terminal is for people: no JSON log lines; the log file has them, with no secrets.
    assert not [line for line in text.splitlines() if line.startswith("{")], text
    # Library warnings (urllib3's SOCKS probe...) go to the log file, not the terminal.
    assert "warnings.warn(" not in text, text
    log = (data / "homeward.log").read_text()
    assert "embedded_redis_started" in log
    password = (data / "redis" / "password").read_text().strip()
    assert password not in log and password not in text

    # A restart closes what the previous run left open, then plays on.
    demo = _start_demo(tmp_path, port, out, "--first-after", "600")
    try:
        _wait_for_line(out, r"Closed 1 incident\(s\) the previous demo run left open", demo, 60)
        assert get("/api/v1/incidents?status=open", dispatcher).json()["items"] == []
    finally:
        assert _ctrl_c(demo) in (0, 130)


def test_a_failed_start_is_one_line_cleans_up_and_keeps_the_admin_token(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # runtime.json is written through runtime.tmp: a directory there breaks start-up after
    # the embedded Redis is up and the admin token has been minted.
    (data / "runtime.tmp").mkdir(parents=True)
    env = _env(HOMEWARD_DATA_DIR=str(data), HOMEWARD_HTTP_PORT=str(free_port()))
    result = _homeward("run", env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("homeward:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("homeward: start-up failed while writing runtime.json"), errors
    token = re.search(r"Admin token \(shown once, keep it\): (\S+)", result.stdout)
    assert token, result.stdout
    assert not (data / "runtime.json").exists()
    assert not (data / "run.lock").exists()
    # The embedded Redis was started (it wrote its password) and stopped: redis-server
    # removes its pid file when it shuts down cleanly.
    assert (data / "redis" / "password").exists()
    pid_file = data / "redis" / "redis.pid"
    if pid_file.exists():
        redis_pid = int(pid_file.read_text())
        assert not pid_alive(redis_pid) or "zombie" in _status(redis_pid)
    # The token printed before the failure works once the cause is fixed.
    (data / "runtime.tmp").rmdir()
    with homeward_run(data, free_port()) as running:
        answer = httpx.get(
            f"{running.url}/api/v1/elders",
            headers={"Authorization": f"Bearer {token.group(1)}"},
        )
        assert answer.status_code == 200
    # And an admin token can always be re-issued on the data dir when nothing runs.
    again = _homeward("token", "create", "--role", "admin", env=env)
    assert again.returncode == 0 and again.stdout.startswith("hw_"), again.stderr


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "zombie"


def test_help_shows_flags_not_types() -> None:
    for args in (["--help"], ["demo", "--help"], ["bench", "fences", "--help"]):
        result = _homeward(*args, env=_env())
        assert result.returncode == 0, result.stderr
        assert "<bool>" not in result.stdout
        assert "│" not in result.stdout  # plain text, no boxes to break when wrapped
    demo_help = _homeward("demo", "--help", env=_env()).stdout
    assert "--volunteers-act / --no-volunteers-act" in demo_help


def test_secrets_are_masked_in_every_log_line() -> None:
    assert mask_secrets("redis://:s3cret@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert mask_secrets("mqtt://ingest:pw@broker:1883 and more") == (
        "mqtt://ingest:***@broker:1883 and more"
    )
    assert mask_secrets("http://127.0.0.1:8000/docs") == "http://127.0.0.1:8000/docs"


def test_log_file_masks_urls_and_secret_fields(tmp_path: Path) -> None:
    script = (
        "import logging, sys\n"
        "from pathlib import Path\n"
        "from locator.core.logging import configure_logging, get_logger\n"
        "configure_logging('info', file=Path(sys.argv[1]), console_level='error')\n"
        "get_logger('t').info('started', url='redis://:hunter2@h:1/0', auth_token='tok-123')\n"
        "logging.getLogger('lib').warning('connecting to mqtt://u:hunter3@h:1')\n"
    )
    log = tmp_path / "x.log"
    result = subprocess.run(
        [sys.executable, "-c", script, str(log)], capture_output=True, text=True, check=True
    )
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines[0]["url"] == "redis://:***@h:1/0" and lines[0]["auth_token"] == "***"
    assert "hunter3" not in lines[1]["event"]
    assert result.stderr == ""  # below the console level: the terminal stays quiet
