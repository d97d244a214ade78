"""Delayed jobs and offline detection, with a controlled clock (no sleeping)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from devices.ingest.batch import Message
from devices.ingest.pipeline import UplinkStore
from locator.core import keys, shards, timers
from locator.core.clock import ManualClock
from locator.core.errors import ConfigError
from locator.core.redis import check_layout, sync_client
from locator.core.timers import TimerQueue
from locator.ticker import Ticker
from tests.conftest import Api
from tests.factories import HAINING, elder_body


@pytest.fixture
def client(redis: object, redis_url: str) -> Iterator[redis.Redis]:
    # Depends on the async `redis` fixture so keys are cleaned before each test.
    sync = sync_client(redis_url, process="test")
    yield sync
    sync.close()


@pytest.fixture(params=["single", "cluster"])
def any_store(request: pytest.FixtureRequest, client: redis.Redis) -> redis.Redis:
    """The timer queue's own tests run once more on the Redis Cluster (shards, one slot each)."""
    if request.param == "single":
        return client
    cluster: redis.Redis = request.getfixturevalue("cluster")
    return cluster


def test_two_tickers_never_claim_the_same_job(any_store: redis.Redis) -> None:
    client = any_store
    now = 1_000_000.0
    for n in range(300):
        timers.schedule(client, timers.job_id("probe", n), due=now - 1)
    queues = [TimerQueue(client), TimerQueue(client)]
    claimed: list[list[str]] = [[], []]
    barrier = threading.Barrier(2)

    def claim(i: int) -> None:
        barrier.wait()
        while batch := queues[i].claim(now=now, limit=7):
            claimed[i] += [job.id for job in batch]

    threads = [threading.Thread(target=claim, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not set(claimed[0]) & set(claimed[1])
    assert len(claimed[0]) + len(claimed[1]) == 300
    assert claimed[0] and claimed[1]


def test_a_job_abandoned_mid_run_is_claimed_again_after_its_lease(any_store: redis.Redis) -> None:
    client = any_store
    queue = TimerQueue(client)
    timers.schedule(client, "probe|1", due=100.0)
    [first] = queue.claim(now=100.0, lease_s=30)
    # The ticker that claimed it dies here. Nobody else sees it during the lease...
    assert queue.claim(now=120.0) == []
    # ...and after it, the next ticker gets it and completes it.
    [again] = queue.claim(now=131.0)
    assert again.id == first.id
    assert queue.complete(again)
    assert queue.claim(now=10_000.0) == []


def test_a_job_rescheduled_while_claimed_survives_completion(any_store: redis.Redis) -> None:
    client = any_store
    queue = TimerQueue(client)
    timers.schedule(client, "probe|1", due=100.0)
    [job] = queue.claim(now=100.0)
    timers.schedule(client, "probe|1", due=500.0)  # e.g. the device spoke meanwhile
    assert not queue.complete(job)  # the stale claim must not delete the new schedule
    assert timers.due_at(client, "probe|1") == 500.0
    # A plain re-score (what the ingest script does) is protected the same way.
    [job] = queue.claim(now=500.0)
    client.zadd(keys.job_timers("probe|1"), {"probe|1": 900.0})
    assert not queue.complete(job)
    assert timers.due_at(client, "probe|1") == 900.0


def test_claims_go_round_the_shards_and_say_when_more_is_due(any_store: redis.Redis) -> None:
    client = any_store
    for n in range(40):
        timers.schedule(client, timers.job_id("probe", n), due=100.0)  # hashed over shards
    for n in range(40):
        timers.schedule(client, timers.job_id("offline", 3, f"b-{n}"), due=100.0)  # one shard
    queue = TimerQueue(client)
    first = queue.claim(now=100.0, limit=16)
    assert queue.saturated and len(first) <= 16 + shards.count()
    assert len({shards.shard_of_job(j.id) for j in first}) > 4  # not one shard's backlog
    seen = {j.id for j in first}
    while batch := queue.claim(now=100.0, limit=16):
        seen |= {j.id for j in batch}
    assert len(seen) == 80 and not queue.saturated
    assert timers.due_count(client, before=200.0) == (80, 130.0)  # leased to 100 + 30


def test_jobs_of_the_pre_shard_set_move_into_their_shards_with_their_tokens(
    client: redis.Redis,
) -> None:
    client.zadd(keys.LEGACY_TIMERS, {"sla|7|3": 500.0, "retention": 60.0})
    client.hset("hw:timer:sla|7|3", mapping={"token": "t0", "payload": '{"step": "voice"}'})
    assert timers.migrate_legacy(client) == 2 and timers.migrate_legacy(client) == 0
    assert timers.due_at(client, "sla|7|3") == 500.0 and timers.due_at(client, "retention") == 60.0
    assert not client.exists(keys.LEGACY_TIMERS, "hw:timer:sla|7|3")
    [job, _] = sorted(TimerQueue(client).claim(now=600.0), key=lambda j: j.id, reverse=True)
    assert (job.id, job.token, job.payload) == ("sla|7|3", "t0", {"step": "voice"})


def test_a_store_written_with_other_shards_refuses_the_process(client: redis.Redis) -> None:
    check_layout(client)
    check_layout(client)  # the same count again is fine
    shards.configure(8)
    try:
        with pytest.raises(ConfigError, match="written with 16 shards, not 8"):
            check_layout(client)
    finally:
        shards.configure(shards.DEFAULT_SHARDS)


# --- offline detection -------------------------------------------------------------------
async def _register(api: Api, **device: object) -> int:
    elder = (
        await api.http.post("/api/v1/elders", json=elder_body(), headers=api.auth("guardian_a"))
    ).json()
    body = {"device_id": "b-1", "elder_id": elder["id"], **device}
    assert (
        await api.http.post("/api/v1/devices", json=body, headers=api.auth("admin"))
    ).status_code == 201
    return int(elder["id"])


def _fix(store: UplinkStore, clock: ManualClock) -> None:
    t = clock.time()
    payload = {
        "_type": "location",
        "lat": HAINING["lat"],
        "lon": HAINING["lon"],
        "tst": t,
        "acc": 10,
    }
    store.process([Message("homeward/devices/b-1/up", json.dumps(payload).encode(), t)])


async def _events(api: Api, elder_id: int) -> list[str]:
    items = (
        await api.http.get(f"/api/v1/elders/{elder_id}/events", headers=api.auth("guardian_a"))
    ).json()["items"]
    return [e["type"] for e in reversed(items)]


async def test_silence_raises_device_offline_once_and_a_message_device_online(
    api: Api, client: redis.Redis, clock: ManualClock, tmp_path: Path
) -> None:
    elder_id = await _register(api)
    store = UplinkStore(client, clock=clock, retention_s=86400, offline_after_s=1200)
    ticker = Ticker(client, clock=clock, offline_after_s=1200)
    _fix(store, clock)
    clock.advance(1199)
    assert ticker.run_once() == []
    clock.advance(2)
    [(job, result)] = ticker.run_once()
    assert (job.id, result) == (f"offline|{elder_id}|b-1", "offline")
    device = (await api.http.get("/api/v1/devices/b-1", headers=api.auth("guardian_a"))).json()
    assert device["online"] is False
    clock.advance(5000)
    assert ticker.run_once() == []  # the job is gone: one notice, not one per tick
    _fix(store, clock)
    assert (await api.http.get("/api/v1/devices/b-1", headers=api.auth("guardian_a"))).json()[
        "online"
    ] is True
    assert await _events(api, elder_id) == ["device_offline", "device_online"]


async def test_a_message_during_the_claim_keeps_the_device_online(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    elder_id = await _register(api)
    store = UplinkStore(client, clock=clock, retention_s=86400, offline_after_s=1200)
    ticker = Ticker(client, clock=clock, offline_after_s=1200)
    _fix(store, clock)
    clock.advance(1300)
    [job] = TimerQueue(client).claim(now=clock.time())  # claimed, then the bracelet speaks
    _fix(store, clock)
    assert ticker.handlers["offline"](job, clock.time()) == "alive"
    assert not TimerQueue(client).complete(job)
    clock.advance(1201)
    assert [r for _, r in ticker.run_once()] == ["offline"]
    assert await _events(api, elder_id) == ["device_offline"]


async def test_a_killed_ticker_fires_the_offline_check_once(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    elder_id = await _register(api)
    store = UplinkStore(client, clock=clock, retention_s=86400, offline_after_s=1200)
    _fix(store, clock)
    clock.advance(1201)
    first = Ticker(client, clock=clock, offline_after_s=1200)
    [job] = TimerQueue(client).claim(now=clock.time())
    first.handlers["offline"](job, clock.time())  # did its work, died before completing
    clock.advance(31)
    second = Ticker(client, clock=clock, offline_after_s=1200)
    assert [r for _, r in second.run_once()] == ["unchanged"]
    assert await _events(api, elder_id) == ["device_offline"]


async def test_per_device_offline_override(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    await _register(api, offline_after_s=300)
    store = UplinkStore(client, clock=clock, retention_s=86400, offline_after_s=1200)
    ticker = Ticker(client, clock=clock, offline_after_s=1200)
    _fix(store, clock)
    clock.advance(301)
    assert [r for _, r in ticker.run_once()] == ["offline"]


async def test_an_unregistered_device_is_not_watched(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    await _register(api)
    store = UplinkStore(client, clock=clock, retention_s=86400, offline_after_s=1200)
    _fix(store, clock)
    await api.http.delete("/api/v1/devices/b-1", headers=api.auth("guardian_a"))
    clock.advance(1300)
    assert [r for _, r in Ticker(client, clock=clock, offline_after_s=1200).run_once()] == ["gone"]
