"""Hot and cold tracks against a real PostgreSQL (a database of the test's own): fixes over five
days, the ticker's mover takes what is older than 72 h out of Redis, and the track endpoint,
the export and erasure see both stores as one; retention drops archived days.

Skipped, with the reason, when no PostgreSQL answers (``HOMEWARD_TEST_ARCHIVE_URL``, default
``postgresql://postgres@127.0.0.1:5432/postgres``)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from devices import keys as devices_keys
from devices.ingest.batch import Message
from devices.ingest.pipeline import UplinkStore
from devices.telemetry import mover
from devices.telemetry.archive import TrackArchive, partition_name
from devices.telemetry.schemas import Fix
from locator.app import create_app
from locator.archiving import JOB
from locator.core import keys
from locator.core.auth import Role, create_token
from locator.core.clock import ManualClock
from locator.core.deps import AppContext
from locator.core.errors import ConfigError
from locator.core.redis import sync_client
from locator.core.settings import load_settings
from locator.retention import Retention
from locator.ticker import Ticker
from tests.factories import HAINING, elder_body

psycopg = pytest.importorskip("psycopg")

DAY = 86400
HOT_S = 3 * DAY
DEVICE = "arc-1"
ADMIN_URL = os.environ.get(
    "HOMEWARD_TEST_ARCHIVE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database on the test server, dropped afterwards."""
    try:
        admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {ADMIN_URL} ({str(exc).strip()[:80]})")
    name = f"hw_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE DATABASE {name}")  # name is ours: hex digits
    parts = urlsplit(ADMIN_URL)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.fixture
def clock() -> ManualClock:
    # Noon UTC today: stream ids (the Redis server's clock) stay near the service clock, and
    # a day's fixes never straddle a UTC midnight, so each lands in one daily partition.
    noon = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    return ManualClock(noon)


@pytest.fixture
def client(redis: aioredis.Redis, redis_url: str) -> Iterator[redis.Redis]:
    sync = sync_client(redis_url, process="test")
    yield sync
    sync.close()


@pytest.fixture
async def http(
    redis: aioredis.Redis, client: redis.Redis, clock: ManualClock, pg_url: str, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """The real app with the archive configured, and an admin's bearer header."""
    settings = load_settings(data_dir=tmp_path, archive_url=pg_url, track_hot_s=HOT_S)
    app = create_app(settings, redis_url=None, mqtt_url=None, clock=clock)
    app.state.ctx = AppContext(settings=settings, redis=redis, clock=clock, sync_redis=client)
    token, _ = await create_token(redis, role=Role.ADMIN, subject=None, created_at=clock.time())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://homeward.test") as h:
        yield h, {"Authorization": f"Bearer {token}"}


async def register(h: httpx.AsyncClient, admin: dict[str, str]) -> int:
    r = await h.post("/api/v1/elders", json=elder_body(), headers=admin)
    eid = int(r.json()["id"])
    r = await h.post("/api/v1/devices", json={"device_id": DEVICE, "elder_id": eid}, headers=admin)
    assert r.status_code == 201, r.text
    return eid


def five_days(client: redis.Redis, clock: ManualClock) -> float:
    """Three fixes a minute apart at the start of days 0..4; returns day 0's start."""
    store = UplinkStore(client, clock=clock, retention_s=30 * DAY, offline_after_s=365 * DAY)
    t0 = clock.time()
    for day in range(5):
        clock.advance(t0 + day * DAY - clock.time())
        for n in range(3):
            fix = {"_type": "location", "lat": HAINING["lat"] + day * 1e-3 + n * 1e-4,
                   "lon": HAINING["lon"], "tst": clock.time(), "acc": 8, "src": "gps"}  # fmt: skip
            message = Message(
                f"homeward/devices/{DEVICE}/up", json.dumps(fix).encode(), clock.time()
            )
            assert store.process([message]).outcomes["stored"] == 1
            clock.advance(60)
    return t0


def ticker(client: redis.Redis, clock: ManualClock, pg_url: str, *, track_s: int) -> Ticker:
    return Ticker(
        client,
        clock=clock,
        offline_after_s=365 * DAY,
        retention_policy=Retention(track_s=track_s, incident_s=365 * DAY),
        archive=TrackArchive(pg_url, hot_s=HOT_S),
    )


def archived(pg_url: str, elder_id: int | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_url) as conn:
        return conn.execute(
            "SELECT extract(epoch FROM tst)::float8, entry_id FROM hw_track_fixes"
            " WHERE %s::bigint IS NULL OR elder_id = %s ORDER BY tst",
            (elder_id, elder_id),
        ).fetchall()


def moved(tick: Ticker) -> None:
    assert [job.id for job, result in tick.run_once() if result == "archived"] == [JOB]


async def read_track(
    h: httpx.AsyncClient, admin: dict[str, str], eid: int, since: float, until: float | None = None
) -> list[dict[str, Any]]:
    window = {"since": datetime.fromtimestamp(since, tz=UTC).isoformat()}
    if until is not None:
        window["until"] = datetime.fromtimestamp(until, tz=UTC).isoformat()
    r = await h.get(f"/api/v1/elders/{eid}/track", params=window, headers=admin)
    assert r.status_code == 200, r.text
    features: list[dict[str, Any]] = r.json()["features"]
    return features


async def test_old_fixes_move_to_postgres_and_reads_see_both_stores_once(
    http: tuple[httpx.AsyncClient, dict[str, str]],
    client: redis.Redis,
    clock: ManualClock,
    pg_url: str,
) -> None:
    h, admin = http
    eid = await register(h, admin)
    t0 = five_days(client, clock)
    track = devices_keys.track(eid, DEVICE)
    before = await read_track(h, admin, eid, t0 - 3600)
    assert len(before) == 15

    tick = ticker(client, clock, pg_url, track_s=30 * DAY)
    moved(tick)
    cutoff = clock.time() - HOT_S
    cold = archived(pg_url, eid)
    # Days 0 and 1 arrived more than 72 h ago: in PostgreSQL, and only there.
    assert [round(t) for t, _ in cold] == [
        round(t0 + d * DAY + n * 60) for d in (0, 1) for n in range(3)
    ]
    hot = client.xrange(track)
    assert len(hot) == 9 and all(float(f["received_ms"]) >= cutoff * 1000 for _, f in hot)
    assert not {e for _, e in cold} & {e for e, _ in hot}
    # The index moved on to the oldest hot fix, ahead of the mover's mark.
    index = keys.retention_streams_of(track)
    assert client.zscore(index, track) == pytest.approx(t0 + 2 * DAY, abs=0.01)
    # Partitions exist ahead of time for the days to come.
    days = TrackArchive(pg_url, hot_s=HOT_S).days()
    today = clock.now().date()
    assert {today + timedelta(days=n) for n in range(3)} <= set(days)

    # One read across both stores: the same features, in fix-time order, each once.
    after = await read_track(h, admin, eid, t0 - 3600)
    assert after == before
    tsts = [f["properties"]["tst"] for f in after]
    assert tsts == sorted(tsts) and len({f["id"] for f in after}) == 15
    # A window wholly in the archive comes from it alone.
    only_cold = await read_track(h, admin, eid, t0 - 3600, t0 + DAY + 600)
    assert only_cold == before[:6]

    # A crash between copy and delete: day 2 copied while still in Redis. Reads still show
    # each fix once, and the mover's later copy adds nothing twice.
    day2 = [Fix.from_stream(DEVICE, e, f) for e, f in hot[:3]]
    assert TrackArchive(pg_url, hot_s=HOT_S).store(
        elder_id=eid, fixes=day2, still_held=lambda: True
    )
    assert await read_track(h, admin, eid, t0 - 3600) == before
    clock.advance(DAY)
    moved(tick)
    assert len(archived(pg_url, eid)) == 9 and client.xlen(track) == 6
    assert await read_track(h, admin, eid, t0 - 3600) == before

    # The export carries the archived part too.
    r = await h.get(f"/api/v1/elders/{eid}/export", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["track"]["features"] == before

    # Erasure: nothing of hers left in either store.
    r = await h.delete(f"/api/v1/elders/{eid}", headers=admin)
    assert r.status_code == 204, r.text
    assert archived(pg_url, eid) == [] and not client.exists(track)


async def test_archive_retention_drops_days_past_track_retention(
    http: tuple[httpx.AsyncClient, dict[str, str]],
    client: redis.Redis,
    clock: ManualClock,
    pg_url: str,
) -> None:
    h, admin = http
    eid = await register(h, admin)
    t0 = five_days(client, clock)
    tick = ticker(client, clock, pg_url, track_s=5 * DAY)
    moved(tick)
    assert len(archived(pg_url)) == 6  # days 0 and 1

    # Day 6: the fixes of days 0 and 1 are past the 5-day retention; their days go.
    clock.advance(t0 + 6 * DAY + 600 - clock.time())
    moved(tick)
    archive = TrackArchive(pg_url, hot_s=HOT_S)
    day = clock.now().date() - timedelta(days=6)
    assert day not in archive.days() and day + timedelta(days=1) not in archive.days()
    with psycopg.connect(pg_url) as conn:
        assert not conn.execute(
            "SELECT 1 FROM pg_class WHERE relname = %s", (partition_name(day),)
        ).fetchall()
    left = archived(pg_url)
    assert [round(t) for t, _ in left] == [
        round(t0 + d * DAY + n * 60) for d in (2, 3) for n in range(3)
    ]
    features = await read_track(h, admin, eid, t0 - 3600)
    assert len(features) == 9  # days 2, 3 archived and day 4 hot
    assert features[0]["properties"]["tst"].startswith(
        datetime.fromtimestamp(t0 + 2 * DAY, tz=UTC).date().isoformat()
    )


def test_a_copy_racing_her_erasure_rolls_back(pg_url: str) -> None:
    archive = TrackArchive(pg_url, hot_s=HOT_S)
    fix = Fix(device_id=DEVICE, entry_id="1-0", tst=1.8e9, received_ms=1.8e12, lat=30.5, lon=120.6)
    assert archive.store(elder_id=7, fixes=[fix], still_held=lambda: False) is False
    assert archived(pg_url) == []
    assert archive.store(elder_id=7, fixes=[fix, fix], still_held=lambda: True)
    assert archive.store(elder_id=7, fixes=[fix], still_held=lambda: True)  # a repeat adds nothing
    assert archived(pg_url) == [(1.8e9, "1-0")]
    assert archive.erase_elder(elder_id=7) == 1


async def test_bytes_per_fix_in_each_store(
    http: tuple[httpx.AsyncClient, dict[str, str]],
    client: redis.Redis,
    clock: ManualClock,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The figures in docs/BENCHMARKS.md: a day of one bracelet at one fix a minute (1,440
    fixes, realistic values), MEMORY USAGE of its stream vs PostgreSQL's relation sizes."""
    eid = await register(*http)
    store = UplinkStore(client, clock=clock, retention_s=30 * DAY, offline_after_s=365 * DAY)
    n = 1440
    for start in range(0, n, 100):
        batch = []
        for i in range(start, min(n, start + 100)):
            clock.advance(60)
            fix = {"_type": "location", "lat": round(30.5112 + i * 7.3e-6, 6),
                   "lon": round(120.6853 - i * 5.1e-6, 6), "tst": int(clock.time()),
                   "acc": 5 + i % 20, "vel": i % 6, "cog": (i * 37) % 360, "batt": 90 - i // 30,
                   "src": "gps"}  # fmt: skip
            topic = f"homeward/devices/{DEVICE}/up"
            batch.append(Message(topic, json.dumps(fix).encode(), clock.time()))
        assert store.process(batch).outcomes["stored"] == len(batch)
    track = devices_keys.track(eid, DEVICE)
    assert client.xlen(track) == n
    redis_bytes = int(client.memory_usage(track, samples=0) or 0) / n
    archive = TrackArchive(pg_url, hot_s=HOT_S)
    clock.advance(HOT_S + 60)
    assert mover.move(client, archive, now=clock.time(), retention_s=30 * DAY) == n
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE hw_track_fixes")
    size = archive.size()
    assert size["rows"] == n and not client.exists(track)
    pg_bytes = (size["heap"] + size["index"]) / n
    with capsys.disabled():
        print(
            f"\nbytes per fix: redis {redis_bytes:.0f}; postgresql {pg_bytes:.0f}"
            f" (heap {size['heap'] / n:.0f} + index {size['index'] / n:.0f};"
            f" {size['total'] / n:.0f} with the maps of {len(archive.days())} small partitions)"
        )
    # Bounds, not the figures: a layout change that doubles either store fails here.
    assert 20 < redis_bytes < 200 and 50 < pg_bytes < 300


def test_archive_settings() -> None:
    settings = load_settings(archive_url="")
    assert settings.archive_url is None and settings.track_hot_s == 259_200
    with pytest.raises(ConfigError, match="HOMEWARD_ARCHIVE_URL: must start with postgresql://"):
        load_settings(archive_url="mysql://db/tracks")
    with pytest.raises(ConfigError, match="HOMEWARD_TRACK_HOT_S"):
        load_settings(track_hot_s=0)
