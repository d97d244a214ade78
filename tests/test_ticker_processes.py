"""Two real `homeward ticker` processes on shortened SLAs, one killed with SIGKILL mid-ladder:
every step runs exactly once, none early, none skipped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from alerts import keys as alerts_keys
from alerts.incidents import storage
from locator import processes
from locator.core.clock import SystemClock
from tests.alerts_harness import build_district, exit_event
from tests.conftest import Api
from tests.ingest_harness import wait_for


def _ticker(env: dict[str, str], data_dir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "locator", "ticker"],
        env={**env, "HOMEWARD_DATA_DIR": str(data_dir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_two_tickers_one_killed_run_every_step_once(
    api: Api, redis_url: str, tmp_path: Path
) -> None:
    d = await build_district(api)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEWARD_")}
    env.update(
        HOMEWARD_REDIS_URL=redis_url,
        HOMEWARD_VOICE_AFTER_S="2",
        HOMEWARD_RESPOND_SLA_S="4",
        HOMEWARD_ONSITE_SLA_S="6",
    )
    dirs = [tmp_path / "a", tmp_path / "b"]
    tickers = [_ticker(env, dirs[0]), _ticker(env, dirs[1])]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        for data_dir in dirs:
            wait_for(
                lambda dd=data_dir: processes.read_heartbeat(dd, "alerts") is not None, timeout=20
            )
        exit_event(client, d.elder_id, SystemClock())  # type: ignore[arg-type]
        wait_for(lambda: storage.open_incident_id(client, d.elder_id) is not None, timeout=10)
        incident_id = storage.open_incident_id(client, d.elder_id)
        assert incident_id is not None
        t0 = float(client.hget(alerts_keys.incident(d.elder_id, incident_id), "t0") or 0)

        def steps() -> list[dict[str, object]]:
            raw = client.lrange(alerts_keys.incident_timeline(d.elder_id, incident_id), 0, -1)
            return [e for e in map(json.loads, raw) if e["type"] == "step"]

        wait_for(lambda: len(steps()) >= 1, timeout=10)
        tickers[0].send_signal(signal.SIGKILL)  # one dies between the voice and respond steps
        tickers[0].wait(timeout=10)
        # The survivor runs the rest (a job the dead one held comes back after its lease).
        wait_for(lambda: len(steps()) >= 3, timeout=60)
        time.sleep(1.0)  # nothing further may fire: the ladder ends at the on-site step
        assert [s["step"] for s in steps()] == ["voice", "respond", "onsite"]
        fields = client.hgetall(alerts_keys.incident(d.elder_id, incident_id))
        assert fields["respond_breached"] == "1" and fields["onsite_breached"] == "1"
        stamps = {s["step"]: _epoch(str(s["at"])) for s in steps()}
        for step, offset in (("voice", 2), ("respond", 4), ("onsite", 6)):
            assert stamps[step] >= t0 + offset - 1, f"{step} ran early"
        # The step list above is what proves "once"; the respond step paged exactly these.
        team = [
            a
            for a in client.zrange(alerts_keys.incident_attempts(d.elder_id, incident_id), 0, -1)
            if ".respond." in a
        ]
        assert len(team) == 3  # lead, member, on-call dispatcher
    finally:
        for process in tickers:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=15)
        client.close()


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()
