"""The CLI as an operator meets it: `homeward run` on embedded defaults, restarts, bad settings."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import redis

from locator.embedded import free_port, pid_alive
from locator.mosquitto import mosquitto_binary
from tests.factories import elder_body


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEWARD_")}
    env.update(overrides)
    return env


def _homeward(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "locator", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


class Running:
    def __init__(self, process: subprocess.Popen[str], url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log

    def output(self) -> str:
        return self.log.read_text()


@contextmanager
def homeward_run(
    data_dir: Path, port: int, *, kill: bool = False, **env_extra: str
) -> Iterator[Running]:
    log = data_dir.parent / f"run-{port}-{time.monotonic_ns()}.log"
    env = _env(HOMEWARD_DATA_DIR=str(data_dir), HOMEWARD_HTTP_PORT=str(port), **env_extra)
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "locator", "run"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
    running = Running(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, running.output()
            try:
                if httpx.get(f"{running.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, running.output()
            time.sleep(0.2)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            process.wait(timeout=20)


def _admin_token(output: str) -> str:
    match = re.search(r"Admin token \(shown once, keep it\): (\S+)", output)
    assert match, output
    return match.group(1)


def test_run_twice_keeps_what_was_registered(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    with homeward_run(data, port) as first:
        token = _admin_token(first.output())
        headers = {"Authorization": f"Bearer {token}"}
        health = httpx.get(f"{first.url}/healthz").json()
        assert health == {
            "status": "ok",
            "redis": "ok",
            "mqtt": "ok",
            "ingest": "ok",
            "ticker": "ok",
            "alerts": "ok",
            "delivery": "ok",
            "relay": "ok",
            "alerting": "ok",
            "redis_memory": "ok",
        }
        assert httpx.get(f"{first.url}/docs").status_code == 200
        created = httpx.post(f"{first.url}/api/v1/elders", json=elder_body(), headers=headers)
        assert created.status_code == 201
        runtime = json.loads((data / "runtime.json").read_text())
        assert runtime["embedded_redis"] and runtime["embedded_mqtt"]
        # Another command finds the running Redis through runtime.json.
        minted = _homeward(
            "token", "create", "--role", "dispatcher", env=_env(HOMEWARD_DATA_DIR=str(data))
        )
        assert minted.returncode == 0, minted.stderr
        dispatcher_token = minted.stdout.strip()
        assert re.fullmatch(r"hw_[\w-]+", dispatcher_token)
    assert first.process.returncode == 0, first.output()
    assert not (data / "runtime.json").exists()

    with homeward_run(data, port) as second:
        assert "Admin token" not in second.output()
        # A broker that had to leave 1883 comes back on the same port for the bracelets.
        assert json.loads((data / "runtime.json").read_text())["mqtt_url"] == runtime["mqtt_url"]
        headers = {"Authorization": f"Bearer {dispatcher_token}"}
        elders = httpx.get(f"{second.url}/api/v1/elders", headers=headers).json()
        assert [e["name"] for e in elders["items"]] == ["张阿婆"]


def test_run_survives_kill_9_without_orphans_or_loss(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    with homeward_run(data, port, kill=True) as first:
        token = _admin_token(first.output())
        headers = {"Authorization": f"Bearer {token}"}
        httpx.post(
            f"{first.url}/api/v1/elders", json=elder_body(), headers=headers
        ).raise_for_status()
        redis_pid = int((data / "redis" / "redis.pid").read_text())
        assert pid_alive(redis_pid)
        time.sleep(1.5)  # appendfsync everysec: what is a second old is on disk
    deadline = time.monotonic() + 10
    while pid_alive(redis_pid):
        # A zombie still "exists" until reaped by init; count it as gone once it is defunct.
        status = Path(f"/proc/{redis_pid}/status")
        if status.exists() and "zombie" in status.read_text():
            break
        if time.monotonic() > deadline:
            pytest.fail("the embedded Redis outlived a killed `homeward run`")
        time.sleep(0.1)
    with homeward_run(data, port) as second:
        elders = httpx.get(f"{second.url}/api/v1/elders", headers=headers).json()
        assert [e["name"] for e in elders["items"]] == ["张阿婆"]


def test_token_create_without_a_running_service_uses_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    minted = _homeward("token", "create", "--role", "admin", env=_env(HOMEWARD_DATA_DIR=str(data)))
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    with homeward_run(data, free_port()) as running:
        listed = httpx.get(
            f"{running.url}/api/v1/elders", headers={"Authorization": f"Bearer {token}"}
        )
        assert listed.status_code == 200


def test_token_create_ttl_sets_the_expiry(tmp_path: Path) -> None:
    env = _env(HOMEWARD_DATA_DIR=str(tmp_path / "data"))
    admin = _homeward("token", "create", "--role", "admin", env=env).stdout.strip()
    short = _homeward("token", "create", "--role", "guardian", "--ttl", "120", env=env)
    assert short.returncode == 0, short.stderr
    assert re.fullmatch(r"hw_[\w-]+\n", short.stdout)  # still only the token
    assert _homeward("token", "create", "--role", "admin", "--ttl", "5", env=env).returncode == 2
    with homeward_run(tmp_path / "data", free_port()) as running:
        listed = httpx.get(
            f"{running.url}/api/v1/tokens", headers={"Authorization": f"Bearer {admin}"}
        ).json()["items"]
    lifetimes = {
        item["role"]: datetime.fromisoformat(item["expires_at"])
        - datetime.fromisoformat(item["created_at"])
        for item in listed
    }
    assert lifetimes["guardian"].total_seconds() == pytest.approx(120, abs=1)
    assert lifetimes["admin"].total_seconds() == pytest.approx(7_776_000, abs=1)


def test_a_second_run_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with homeward_run(data, free_port()) as running:
        second = _homeward(
            "run", env=_env(HOMEWARD_DATA_DIR=str(data), HOMEWARD_HTTP_PORT=str(free_port()))
        )
        assert second.returncode == 2
        assert second.stderr.strip().count("\n") == 0, second.stderr
        assert f"pid {running.process.pid}" in second.stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "HOMEWARD_REDIS_URL",
            "localhost:6379",
            "bad setting HOMEWARD_REDIS_URL: must start with redis://",
        ),
        (
            "HOMEWARD_REDIS_URL",
            "redis://localhost:99999",
            "bad setting HOMEWARD_REDIS_URL: has a bad port",
        ),
        ("HOMEWARD_MQTT_URL", "http://broker", "bad setting HOMEWARD_MQTT_URL"),
        ("HOMEWARD_HTTP_PORT", "eighty", "bad setting HOMEWARD_HTTP_PORT"),
        ("HOMEWARD_TIMEZONE", "Mars/Olympus", "bad setting HOMEWARD_TIMEZONE: unknown time zone"),
        ("HOMEWARD_RESPOND_SLA_S", "-5", "bad setting HOMEWARD_RESPOND_SLA_S"),
        ("HOMEWARD_MAP_TILES", "google", "bad setting HOMEWARD_MAP_TILES"),
        ("HOMEWARD_TWILIO_FROM", "12345", "bad setting HOMEWARD_TWILIO_FROM"),
        ("HOMEWARD_GATEWAY_PORTS", "gt06=5023,tk103=5002", "bad setting HOMEWARD_GATEWAY_PORTS"),
    ],
)
def test_a_bad_setting_is_one_clear_line(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    result = _homeward("api", env=_env(HOMEWARD_DATA_DIR=str(tmp_path), **{variable: value}))
    assert result.returncode == 2
    assert result.stderr.startswith(f"homeward: {message}"), result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "Traceback" not in result.stderr


def test_a_taken_http_port_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = _homeward(
            "run", env=_env(HOMEWARD_DATA_DIR=str(tmp_path), HOMEWARD_HTTP_PORT=str(port))
        )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"homeward: HTTP port 127.0.0.1:{port} is in use; set HOMEWARD_HTTP_PORT to a free port"
    )
    # Nothing was started before the port check failed.
    assert not (tmp_path / "redis").exists()


def test_ingest_and_ticker_beat_their_heartbeat(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    env = _env(
        HOMEWARD_REDIS_URL=redis_url, HOMEWARD_MQTT_URL=mqtt_url, HOMEWARD_DATA_DIR=str(tmp_path)
    )
    assert _homeward("health", "--process", "ingest", env=env).returncode == 1
    process = subprocess.Popen(
        [sys.executable, "-m", "locator", "ingest"], env=env, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 20
        while _homeward("health", "--process", "ingest", env=env).returncode != 0:
            assert time.monotonic() < deadline
            time.sleep(0.3)
    finally:
        process.terminate()
        assert process.wait(timeout=15) == 0


def test_embedded_redis_needs_its_password_and_secrets_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with homeward_run(data, free_port()):
        runtime = json.loads((data / "runtime.json").read_text())
        port = int(runtime["redis_url"].rsplit(":", 1)[1].split("/")[0])
        anonymous = redis.Redis(port=port)
        with pytest.raises(redis.AuthenticationError):
            anonymous.set("hw:token:forged", "admin")
        anonymous.close()
        for secret in (data / "runtime.json", data / "redis" / "password"):
            assert secret.stat().st_mode & 0o077 == 0, secret
        assert (data / "redis").stat().st_mode & 0o077 == 0


def test_a_stale_runtime_file_is_ignored(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    # What a kill -9 leaves behind, with a pid that is alive (ours) but no lock held.
    (data / "runtime.json").write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "redis_url": "redis://127.0.0.1:1/0",
                "mqtt_url": "mqtt://127.0.0.1:1",
                "http_url": "http://x",
                "embedded_redis": True,
                "embedded_mqtt": True,
                "started_at": 0,
            }
        )
    )
    minted = _homeward("token", "create", "--role", "admin", env=_env(HOMEWARD_DATA_DIR=str(data)))
    assert minted.returncode == 0, minted.stderr
    assert minted.stdout.startswith("hw_")


def test_token_revoke(tmp_path: Path) -> None:
    env = _env(HOMEWARD_DATA_DIR=str(tmp_path / "data"))
    token = _homeward("token", "create", "--role", "dispatcher", env=env).stdout.strip()
    assert _homeward("token", "revoke", token, env=env).stdout.strip() == "revoked"
    again = _homeward("token", "revoke", token, env=env)
    assert again.returncode == 1


def test_unreachable_redis_is_one_line(tmp_path: Path) -> None:
    env = _env(
        HOMEWARD_DATA_DIR=str(tmp_path), HOMEWARD_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"
    )
    result = _homeward("token", "create", "--role", "admin", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("homeward: Redis is unreachable")
    assert result.stderr.strip().count("\n") == 0


@pytest.mark.skipif(mosquitto_binary() is None, reason="the benchmark drives a real Mosquitto")
def test_bench_ingest_runs_end_to_end_and_loses_nothing(tmp_path: Path) -> None:
    result = _homeward(
        "bench",
        "ingest",
        "--devices",
        "50",
        "--fixes",
        "600",
        "--rate",
        "200",
        "--seconds",
        "1",
        env=_env(HOMEWARD_DATA_DIR=str(tmp_path)),
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert "ratio ingest/bare:" in result.stdout
    assert re.search(r"^redis: 6\.2\.\d+, allocator \S+, embedded", result.stdout, re.M)
    match = re.search(r"track entries stored: ([\d,]+) \(expected ([\d,]+)\)", result.stdout)
    assert match and match.group(1) == match.group(2) == "800", result.stdout


@pytest.mark.skipif(mosquitto_binary() is None, reason="the benchmark drives a real Mosquitto")
def test_bench_gateway_holds_acks_and_stores_every_frame(tmp_path: Path) -> None:
    result = _homeward(
        "bench",
        "gateway",
        "--connections",
        "50",
        "--frames",
        "2",
        "--rate",
        "26",  # 13 a second from each of the two fleets
        "--seconds",
        "1",
        env=_env(HOMEWARD_DATA_DIR=str(tmp_path)),
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    held = re.search(r"connections held \(login acked\)\s+([\d,]+)\s+([\d,]+)", out)
    assert held and held.groups() == ("50", "50"), out
    rates = re.search(r"location frames/s acked\s+([\d,]+)\s+([\d,]+)", out)
    assert rates and all(int(r.replace(",", "")) > 0 for r in rates.groups()), out
    assert re.search(r"memory per connection\s+[\d.]+ KB\s+[\d.]+ KB", out), out
    assert re.search(r"latency p50 [\d.]+ ms, p99 [\d.]+ ms, max [\d.]+ ms \((\d+) fixes", out)
    stored = re.search(r"track entries stored: ([\d,]+) \(expected ([\d,]+)\)", out)
    # 50 x 2 blasted + 26 paced, each stored by the ingest: nothing lost on the way.
    assert stored and stored.group(1) == stored.group(2) == "126", out


def test_bench_fences_runs_end_to_end(tmp_path: Path) -> None:
    result = _homeward(
        "bench",
        "fences",
        "--elders",
        "200",
        "--fixes",
        "4000",
        "--loop-fixes",
        "1000",
        "--pipeline-fixes",
        "400",
        "--postgis-dsn",
        "",
        env=_env(HOMEWARD_DATA_DIR=str(tmp_path)),
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    for label in (
        "(a) engine batch path",
        "(b) prepared shapely loop",
        "(a)/(b) =",
        "(d) whole ingest path",
    ):
        assert label in result.stdout, result.stdout
