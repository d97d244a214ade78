"""The compose ingest keeps its MQTT identity across container re-creation.

An upgrade re-creates the ingest container with a new hostname. If its client id came from
the hostname (homeward-ingest-<hostname>), the new container would start a fresh session
and the fixes the broker queued for the old one during the upgrade would never arrive.
This runs the real ingest twice with docker-compose.yml's environment, each in its own UTS
namespace with a different hostname, against Mosquitto on the production configuration.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from devices import keys as devices_keys
from devices.registry.mqtt_credentials import passwd_line
from locator.processes import read_heartbeat
from tests.conftest import Api
from tests.factories import HAINING, elder_body
from tests.ingest_harness import wait_for
from tests.test_compose import (
    COMPOSE_FILE,
    _Client,
    _environment,
    _make_passwd,
    _mosquitto,
    _service,
    needs_mosquitto,
)

DEVICE = "860003"
DEVICE_PASSWORD = "bracelet-pw-1"


def _own_hostname_works() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--uts", "hostname", "probe"], capture_output=True)
    return probe.returncode == 0


def _compose_env(port: int, redis_url: str, data_dir: Path) -> dict[str, str]:
    """The ingest service's environment from docker-compose.yml, pointed at this test's
    broker and Redis (what differs between the containers is only the hostname)."""
    compose: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    env = {k: v for k, v in _environment(_service(compose, "ingest")).items() if v is not None}
    env["HOMEWARD_MQTT_URL"] = env["HOMEWARD_MQTT_URL"].replace(
        "@mosquitto:1883", f"@127.0.0.1:{port}"
    )
    env["HOMEWARD_REDIS_URL"] = redis_url
    env["HOMEWARD_DATA_DIR"] = str(data_dir)
    base = {k: v for k, v in os.environ.items() if not k.startswith("HOMEWARD_")}
    return {**base, **env}


def _start_ingest(env: dict[str, str], hostname: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "locator", "ingest"]
    if _own_hostname_works():
        # `exec` keeps the ingest's pid, so SIGTERM reaches it and not a shell.
        script = 'hostname "$1" && shift && exec "$@"'
        argv = ["unshare", "--uts", "sh", "-c", script, "sh", hostname, *argv]
    return subprocess.Popen(argv, env={**env, "HOSTNAME": hostname})


def _wait_subscribed(data_dir: Path) -> None:
    def ready() -> bool:
        heartbeat = read_heartbeat(data_dir, "ingest")
        return heartbeat is not None and heartbeat.status.get("subscribed") is True

    wait_for(ready, timeout=30)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def _fix(n: int) -> bytes:
    fix = {"_type": "location", "lat": HAINING["lat"], "lon": HAINING["lon"], "acc": 10}
    return json.dumps({**fix, "tst": int(time.time()) - 600 + n}).encode()


@needs_mosquitto
@pytest.mark.timeout(180)
async def test_a_recreated_ingest_receives_what_was_queued_while_it_was_away(
    api: Api, redis_url: str, tmp_path: Path
) -> None:
    elder = await api.http.post("/api/v1/elders", json=elder_body(), headers=api.auth("admin"))
    elder_id = int(elder.json()["id"])
    made = await api.http.post(
        "/api/v1/devices",
        json={"device_id": DEVICE, "elder_id": elder_id},
        headers=api.auth("admin"),
    )
    assert made.status_code == 201, made.text
    passwd = _make_passwd(tmp_path, [passwd_line(username=DEVICE, password=DEVICE_PASSWORD)])
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    sync = redis.Redis.from_url(redis_url)
    track = devices_keys.track(elder_id, DEVICE)
    with _mosquitto(broker_dir, passwd) as (port, _log):
        bracelet = _Client(port, DEVICE, DEVICE_PASSWORD)
        first = _start_ingest(_compose_env(port, redis_url, tmp_path / "a"), "ingest-a")
        try:
            assert not bracelet.reason.is_failure, bracelet.reason
            _wait_subscribed(tmp_path / "a")
            bracelet.publish(f"homeward/devices/{DEVICE}/up", _fix(0))
            wait_for(lambda: sync.xlen(track) == 1, timeout=20)
            _stop(first)
            # The upgrade: no ingest runs, the bracelet keeps reporting.
            for n in range(1, 6):
                bracelet.publish(f"homeward/devices/{DEVICE}/up", _fix(n))
            assert sync.xlen(track) == 1
            second = _start_ingest(_compose_env(port, redis_url, tmp_path / "b"), "ingest-b")
            try:
                _wait_subscribed(tmp_path / "b")
                wait_for(lambda: sync.xlen(track) == 6, timeout=30)
            finally:
                _stop(second)
        finally:
            if first.poll() is None:
                _stop(first)
            bracelet.close()
            sync.close()
