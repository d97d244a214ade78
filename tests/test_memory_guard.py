"""Redis memory guard: /healthz, /metrics and the console banner warn at 80% of maxmemory,
before noeviction refuses the ingest's writes; /healthz answers 503 from 95%."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from alerts import keys as alerts_keys
from locator.app import create_app
from locator.core.auth import Role, create_token
from locator.core.clock import ManualClock
from locator.core.deps import AppContext
from locator.core.redis import async_client, sync_client
from locator.core.settings import load_settings
from tests.servers import redis_server

LIMIT = 32 * 2**20
CHUNK = b"x" * 200_000


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    """Our own server: its maxmemory is set low here and restored after."""
    with redis_server(tmp_path / "redis") as url:
        client = redis.Redis.from_url(url)
        before = client.config_get("maxmemory")["maxmemory"]
        client.config_set("maxmemory", LIMIT)
        try:
            yield url
        finally:
            for key in client.scan_iter(match="hw:test:fill:*"):
                client.delete(key)
            client.config_set("maxmemory", before)
            client.close()


def _fill_to(client: redis.Redis, ratio: float, start: int) -> int:
    """Write 200 kB values until used_memory passes ``ratio`` of maxmemory."""
    n = start
    while True:
        info: Any = client.info("memory")
        if int(info["used_memory"]) / int(info["maxmemory"]) >= ratio:
            return n
        client.set(f"hw:test:fill:{n}", CHUNK)
        n += 1


def _system_events(client: redis.Redis) -> list[dict[str, Any]]:
    return [
        json.loads(fields["data"])
        for _, fields in client.xrange(alerts_keys.FEED)
        if fields.get("type") == "system"
    ]


async def test_memory_past_80_percent_warns_and_past_95_is_unhealthy(
    private_redis: str, tmp_path: Path
) -> None:
    clock = ManualClock()
    settings = load_settings(data_dir=tmp_path)
    app = create_app(settings, redis_url=private_redis, mqtt_url=None, clock=clock)
    aredis = async_client(private_redis, process="test")
    sync = sync_client(private_redis, process="test")
    app.state.ctx = AppContext(
        settings=settings, redis=aredis, clock=clock, mqtt_url=None, sync_redis=sync
    )
    token, _ = await create_token(aredis, role=Role.ADMIN, subject=None, created_at=clock.time())
    admin = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as http:
            response = await http.get("/healthz")
            assert response.status_code == 200
            assert response.json()["redis_memory"] == "ok"
            assert _system_events(sync) == []

            n = _fill_to(sync, 0.82, 0)
            response = await http.get("/healthz")
            body = response.json()
            assert response.status_code == 200, body  # nothing is refused yet
            assert body["status"] == "warn"
            assert body["redis_memory"].startswith("warn: 8")
            assert body["redis_memory"].endswith("% of maxmemory")
            # The console banner: a "degraded" system event on the live feed, naming it.
            (event,) = _system_events(sync)
            assert event["status"] == "degraded"
            assert any(p.startswith("redis memory: 8") for p in event["problems"])
            metrics = await http.get("/metrics", headers=admin)
            ratio = next(
                float(line.split()[-1])
                for line in metrics.text.splitlines()
                if line.startswith("homeward_redis_memory_ratio ")
            )
            assert 0.8 <= ratio < 0.95

            # Well past 95 %: used_memory moves by a few hundred kB between two reads (buffers
            # freed; more on a loaded machine), so a fill stopping past the line can read below
            # it a moment later. Only the health check's own reading decides: while it still
            # says "warn" it is right to answer 200, and one more chunk must tip it over.
            n = _fill_to(sync, 0.975, n)
            response = await http.get("/healthz")
            for _ in range(3):  # each chunk is ~1 % of the test server's maxmemory
                if response.json()["redis_memory"].startswith("down"):
                    break
                assert response.status_code == 200
                sync.set(f"hw:test:fill:{n}", CHUNK)
                n += 1
                response = await http.get("/healthz")
            assert response.status_code == 503
            # Past the line, by however much a loaded machine's buffers add (101 % seen).
            down = re.fullmatch(r"down: (\d+)% of maxmemory", response.json()["redis_memory"])
            assert down and int(down.group(1)) >= 95, response.json()

            for key in sync.scan_iter(match="hw:test:fill:*"):
                sync.delete(key)
            response = await http.get("/healthz")
            assert response.status_code == 200 and response.json()["redis_memory"] == "ok"
            assert _system_events(sync)[-1]["status"] == "ok"  # the banner goes away
    finally:
        await aredis.aclose()
        sync.close()
