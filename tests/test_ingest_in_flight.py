"""Two batches in flight: batch N+1 is sent while Redis still runs batch N.

Her fixes must keep their order (one connection), her zone state must chain from one batch
to the next without conflicts, her relay intents must stay marked until the last batch that
has her is finished, and a batch that fails in flight must be stored again, never lost.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis

from devices import keys as devices_keys
from devices.ingest.batch import Message, Submitted
from devices.ingest.pipeline import UplinkStore
from devices.telemetry.readers import track_length
from geofences import keys as geofences_keys
from geofences.evaluator import ZoneEvaluator
from locator.core import keys as core_keys
from locator.core import shards
from locator.core.clock import ManualClock
from locator.core.redis import sync_client
from tests.alerts_harness import north
from tests.conftest import Api, both_backends
from tests.factories import register_elder_at_home
from tests.ingest_harness import Publisher, RunningIngest, wait_for
from tests.test_ingest import fix, register
from tests.test_mqtt_burst import needs_mosquitto

UP = "homeward/devices/f-1/up"
TZ = ZoneInfo("Asia/Shanghai")


@pytest.fixture
async def elder_id(api: Api) -> int:
    return await register_elder_at_home(api, device_id="f-1")


@pytest.fixture
def client(elder_id: int, store_url: str, on_cluster: bool) -> Iterator[redis.Redis]:
    sync = sync_client(store_url, process="test", cluster=on_cluster)
    yield sync
    sync.close()


@pytest.fixture
def store(client: redis.Redis, clock: ManualClock) -> UplinkStore:
    evaluator = ZoneEvaluator(client, timezone=TZ)
    return UplinkStore(client, clock=clock, retention_s=86400, evaluator=evaluator)


def _fix_north(clock: ManualClock, metres: float) -> Message:
    """One fix ``metres`` north of home, 10 s after the last (never too fast)."""
    clock.advance(10)
    body: dict[str, Any] = {"_type": "location", "tst": clock.time(), "acc": 5, **north(metres)}
    return Message(UP, json.dumps(body).encode(), clock.time())


def _count_stale(store: UplinkStore) -> list[object]:
    """Every uplink the store had to look at again (a moved binding or zone state)."""
    seen: list[object] = []
    forget = store.routes.forget

    def counting(route: Any) -> None:
        seen.append(route)
        forget(route)

    store.routes.forget = counting  # type: ignore[method-assign]
    return seen


def _intent_marked(client: redis.Redis, store: UplinkStore, elder_id: int) -> bool:
    member = f"{elder_id}|{store._relay_token}"
    return client.zscore(core_keys.relay_pending(shards.shard_of(elder_id)), member) is not None


@both_backends
async def test_her_fixes_in_two_batches_in_flight_are_stored_in_order_and_exit_once(
    client: redis.Redis, store: UplinkStore, clock: ManualClock, elder_id: int
) -> None:
    stale = _count_stale(store)
    store.process([_fix_north(clock, 20)])  # at home: her zone state exists
    verdicts: dict[str, int] = {}
    for _ in range(3):
        first = store.submit([_fix_north(clock, 400)])
        second = store.submit([_fix_north(clock, 420)])
        for outcome in (store.finish(first), store.finish(second)):
            for verdict, count in outcome.outcomes.items():
                verdicts[verdict] = verdicts.get(verdict, 0) + count
    # Every fix current, none "late": the second batch ran after the first.
    assert verdicts == {"stored": 6}
    assert stale == []  # each batch's zone update built on the one before it: no conflict
    track = client.xrange(devices_keys.track(elder_id, "f-1"))
    assert [fields["flags"] for _, fields in track] == [""] * 7
    tsts = [float(fields["tst"]) for _, fields in track]
    assert tsts == sorted(tsts)
    assert float(client.hget(devices_keys.last_position(elder_id), "tst") or 0) == tsts[-1]
    exits = [
        fields
        for _, fields in client.xrange(geofences_keys.elder_transitions(elder_id))
        if fields["kind"] == "zone_exit"
    ]
    assert len(exits) == 1


@both_backends
async def test_batches_are_finished_in_the_order_they_were_sent(
    client: redis.Redis, store: UplinkStore, clock: ManualClock, elder_id: int
) -> None:
    first = store.submit([_fix_north(clock, 20)])
    second = store.submit([_fix_north(clock, 30)])
    with pytest.raises(RuntimeError, match="order"):
        store.finish(second)
    assert store.finish(first).outcomes == {"stored": 1}
    assert store.finish(second).outcomes == {"stored": 1}
    assert not store.holds(first) and not store.holds(second)


@both_backends
async def test_her_intent_stays_marked_while_a_later_batch_in_flight_has_her(
    client: redis.Redis, store: UplinkStore, clock: ManualClock, elder_id: int
) -> None:
    # Her first fix creates her track: an effect to relay (the retention index), so the
    # first batch applies its relay list and releases what it may.
    first = store.submit([_fix_north(clock, 20)])
    second = store.submit([_fix_north(clock, 30)])
    assert _intent_marked(client, store, elder_id)
    store.finish(first)
    # The second batch may still leave effects on her list: her intent is its to release.
    assert _intent_marked(client, store, elder_id)
    store.finish(second)
    store.process([])  # the next round trip carries the releases of batches that relayed nothing
    assert not _intent_marked(client, store, elder_id)
    assert client.llen(core_keys.relay(elder_id)) == 0


def _hold_finish(ingest: RunningIngest, fail_on: int) -> list[int]:
    """The lane's store: its ``fail_on``-th finish fails as if Redis dropped the connection
    (after the scripts ran); returns the sizes of the in-flight queue seen at each submit."""
    store = ingest.loop._lanes[0].store
    assert store is not None
    finish, submit = store.finish, store.submit
    calls = {"finish": 0}
    depths: list[int] = []

    def failing_finish(submitted: Submitted) -> object:
        calls["finish"] += 1
        if calls["finish"] == fail_on:
            raise redis.ConnectionError("the test drops this batch in flight")
        return finish(submitted)

    def counting_submit(batch: list[Message]) -> Submitted:
        depths.append(len(store._in_flight))
        return submit(batch)

    store.finish = failing_finish  # type: ignore[method-assign]
    store.submit = counting_submit  # type: ignore[method-assign]
    return depths


@needs_mosquitto
async def test_a_batch_that_fails_in_flight_is_stored_again_and_nothing_is_lost(
    api: Api,
    mqtt_url: str,
    redis_url: str,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    elder = await register(api, "flight-1")
    ingest = RunningIngest(mqtt_url, redis_url, tmp_path, clock, workers=1)
    publisher = Publisher(mqtt_url)
    acked: list[int] = []
    try:
        lane = ingest.loop._lanes[0]
        lane.batch_max = 4  # a backlog of 2 is enough for a second batch in flight
        depths = _hold_finish(ingest, fail_on=3)
        ack_many = ingest.loop._client.ack_many

        def acknowledge(mids: list[int]) -> object:
            acked.extend(mids)
            return ack_many(mids)

        ingest.loop._client.ack_many = acknowledge  # type: ignore[method-assign]
        gate = threading.Event()
        _hold_first_submit(ingest, gate)  # a backlog builds up behind the first batch
        t0 = clock.time() - 300
        for n in range(40):
            publisher.send("homeward/devices/flight-1/up", fix(t0 + n, lat=30.5 + n * 1e-5))
        queued = lambda: len(lane._pending) + sum(len(s[3]) for s in list(lane.queue.queue))  # noqa: E731
        wait_for(lambda: queued() >= 30)
        gate.set()
        check = sync_client(redis_url, process="test")
        try:
            wait_for(lambda: track_length(check, elder_id=elder, device_id="flight-1") == 40)
            wait_for(lambda: len(acked) == 40)
        finally:
            check.close()
    finally:
        publisher.close()
        ingest.close()
    assert max(depths) == 1  # batches went out while the one before was in flight
    assert len(set(acked)) == 40  # each acknowledged once, after it was stored


def _hold_first_submit(ingest: RunningIngest, gate: threading.Event) -> None:
    store = ingest.loop._lanes[0].store
    assert store is not None
    submit = store.submit

    def held(batch: list[Message]) -> Submitted:
        gate.wait(10)
        return submit(batch)

    store.submit = held  # type: ignore[method-assign]
