"""The ingest path on a real Redis Cluster (3 masters of the project's 6.2 binary).

The cluster refuses any command or script whose keys span two hash slots (CROSSSLOT), so
running the real pipeline, the ticker and the alerts intake on it is the proof that each
per-elder script touches one slot and that the shared streams and timers are reached only
through their shards. The elders, zones and devices are registered through the API on the
cluster itself (the app built with REDIS_CLUSTER semantics).

The crash windows of the relay run on both backends: the store script commits, the process
dies before the relay, and the transition still reaches the alerts intake exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis

from alerts import intake
from devices import keys as devices_keys
from devices.ingest.batch import Message
from devices.ingest.pipeline import UplinkStore
from devices.telemetry import erasure
from geofences import keys as geofences_keys
from geofences.evaluator import ZoneEvaluator
from locator.core import keys, relay, shards
from locator.core.clock import ManualClock
from locator.core.redis import is_cluster, sync_client
from locator.ticker import Ticker
from tests.alerts_harness import config, north
from tests.conftest import Api, both_backends
from tests.factories import register_elder_at_home

UP = "homeward/devices/c-1/up"
TZ = ZoneInfo("Asia/Shanghai")


class Killed(Exception):
    """The ingest process dies here."""


@pytest.fixture
async def elder_id(api: Api) -> int:
    """An elder with a 150 m safe zone at home and bracelet c-1 (on the single Redis)."""
    return await register_elder_at_home(api, device_id="c-1")


on_the_cluster = pytest.mark.parametrize("store_backend", ["cluster"], indirect=True)


@pytest.fixture
def backend(elder_id: int, store_url: str, on_cluster: bool) -> Iterator[redis.Redis]:
    """The store the path runs on, where the API registered her: the test Redis or the cluster."""
    client = sync_client(store_url, process="test", cluster=on_cluster)
    intake.ensure_groups(client)
    yield client
    client.close()


def _store(client: redis.Redis, clock: ManualClock) -> UplinkStore:
    evaluator = ZoneEvaluator(client, timezone=TZ)
    return UplinkStore(client, clock=clock, retention_s=86400, evaluator=evaluator)


def _message(clock: ManualClock, metres: float, **extra: Any) -> Message:
    body = {"_type": "location", "tst": clock.time(), "acc": 5, **north(metres), **extra}
    return Message(UP, json.dumps(body).encode(), clock.time())


def _send(store: UplinkStore, clock: ManualClock, metres: float, **extra: Any) -> dict[str, int]:
    clock.advance(10)
    return dict(store.process([_message(clock, metres, **extra)]).outcomes)


def _shard_entries(client: redis.Redis, stream: str) -> list[dict[str, str]]:
    return [fields for _, fields in client.xrange(stream)]


def _recording(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The intake's handlers replaced by a recorder: which alarm it handled, by source."""
    handled: list[tuple[str, str]] = []

    def record(_: Any, __: Any, source: str, fields: dict[str, str]) -> str:
        handled.append((fields.get("kind") or fields.get("type", ""), source))
        return "recorded"

    monkeypatch.setitem(intake.HANDLERS, "transitions", record)
    monkeypatch.setitem(intake.HANDLERS, "device-events", record)
    return handled


def _consume_all(client: redis.Redis, clock: ManualClock) -> int:
    total = 0
    while handled := intake.consume_once(client, config(clock), consumer="c", block_ms=0):
        total += handled
    return total


def test_a_local_cluster_has_three_masters_of_62_owning_every_slot(cluster: redis.Redis) -> None:
    assert is_cluster(cluster)
    info: Any = cluster.cluster_info()
    assert info["cluster_state"] == "ok" and int(info["cluster_slots_assigned"]) == 16384
    nodes: Any = cluster.get_primaries()  # type: ignore[attr-defined]
    assert len(nodes) == 3
    assert str(cluster.info("server")["redis_version"]).startswith("6.2.")
    # The cluster itself refuses a script over two elders: what the tests below rely on.
    script = cluster.register_script("return redis.call('GET', KEYS[1])")
    with pytest.raises(redis.RedisClusterException, match="same key slot"):
        script(keys=[devices_keys.elder(1), devices_keys.elder(2)])


@on_the_cluster
async def test_the_ingest_path_runs_on_the_cluster_one_slot_per_script(
    elder_id: int, backend: redis.Redis, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = backend
    assert is_cluster(cluster)
    handled = _recording(monkeypatch)
    store = _store(cluster, clock)
    assert _send(store, clock, 0) == {"stored": 1}
    assert _send(store, clock, 300) == {"stored": 1}
    assert _send(store, clock, 310) == {"stored": 1}  # the second fix outside: exit confirmed
    assert _send(store, clock, 320, alarm="sos") == {"stored": 1}
    again = store.process([Message(UP, b'{"_type":"status","tst":1,"batt":50}', clock.time())])
    assert again.outcomes["seen"] == 1
    shard = shards.shard_of(elder_id)
    exits = [
        f
        for f in _shard_entries(cluster, geofences_keys.transitions(shard))
        if f["kind"] == "zone_exit"
    ]
    assert len(exits) == 1 and exits[0]["source"].startswith(f"e:{elder_id}:transitions@")
    events = _shard_entries(cluster, devices_keys.device_events(shard))
    assert [f["type"] for f in events] == ["sos"]
    assert events[0]["source"].startswith(f"e:{elder_id}:events@")
    # Her offline check sits in her shard's timer set, armed once (not moved per fix).
    job = f"offline|{elder_id}|c-1"
    first_due = float(str(cluster.zscore(keys.job_timers(job), job)))
    assert first_due == pytest.approx(clock.time() - 30 + 1200, abs=1)
    # Every new per-elder stream is in her shard's retention index; her relay list is empty.
    index = {str(k) for k in cluster.zrange(keys.retention_streams(shard), 0, -1)}
    assert index == {
        devices_keys.track(elder_id, "c-1"),
        devices_keys.elder_events(elder_id),
        geofences_keys.elder_transitions(elder_id),
    }
    assert cluster.llen(keys.relay(elder_id)) == 0
    # A redelivered fix is a duplicate, dead-lettered through the relay (one slot of its own).
    clock.advance(1)
    duplicate = store.process([_message(clock, 320, alarm="sos") for _ in range(1)])
    assert duplicate.outcomes["seen"] + duplicate.outcomes["stored"] == 1  # a new tst: new fix
    # The alerts intake reads every shard, one read per shard (no command spans slots).
    assert _consume_all(cluster, clock) == 3
    assert sorted(kind for kind, _ in handled) == ["sos", "sos", "zone_exit"]
    # The ticker's side on the cluster: the offline check fires through the relay...
    ticker = Ticker(cluster, clock=clock, offline_after_s=1200)
    clock.advance(1201)
    assert [r for _, r in ticker.run_once()] == ["offline"]
    assert [f["type"] for f in _shard_entries(cluster, devices_keys.device_events(shard))][-1] == (
        "device_offline"
    )
    assert _consume_all(cluster, clock) == 1
    # ...the alarm streams are trimmed behind the group in every shard...
    removed = ticker.trim_streams()
    assert removed[devices_keys.device_events(shard)] >= 2 and len(removed) == 3 * shards.count()
    # ...and retention walks every shard's index, deleting what it empties.
    assert erasure.sweep(cluster, now=clock.time() + 10 * 86400, retention_s=86400) >= 5
    assert cluster.zcard(keys.retention_streams(shard)) == 0
    assert not cluster.exists(devices_keys.track(elder_id, "c-1"))


@pytest.mark.parametrize("recovery", ["redelivery", "sweep"])
@both_backends
def test_a_crash_between_the_script_and_the_relay_still_relays_the_exit_once(
    backend: redis.Redis,
    elder_id: int,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    recovery: str,
) -> None:
    client = backend
    handled = _recording(monkeypatch)
    store = _store(client, clock)
    assert _send(store, clock, 0) == {"stored": 1}
    assert _send(store, clock, 300) == {"stored": 1}
    clock.advance(10)
    confirming = _message(clock, 310)

    def killed(*args: Any, **kwargs: Any) -> int:
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(relay, "apply", killed)
        with pytest.raises(Killed):
            store.process([confirming])
    shard = shards.shard_of(elder_id)
    # Committed in her keys, not yet on her shard's stream: the batch was never acknowledged.
    assert [f["kind"] for _, f in client.xrange(geofences_keys.elder_transitions(elder_id))] == [
        "zone_exit"
    ]
    assert client.xlen(geofences_keys.transitions(shard)) == 0
    assert client.llen(keys.relay(elder_id)) >= 1
    if recovery == "redelivery":
        # The broker redelivers to a restarted ingest: a duplicate, and its relay is applied.
        restarted = _store(client, clock)
        assert restarted.process([confirming]).outcomes["rejected:duplicate"] == 1
    else:
        # Nobody comes back for it: the intent left in her shard is swept by the ticker.
        ticker = Ticker(client, clock=clock, offline_after_s=1200)
        assert ticker.sweep_relays() == 0  # too fresh: its writer may still be alive
        clock.advance(relay.SWEEP_AFTER_S + 1)
        assert ticker.sweep_relays() >= 1
        assert ticker.sweep_relays() == 0
    assert client.llen(keys.relay(elder_id)) == 0
    exits = [
        f
        for f in _shard_entries(client, geofences_keys.transitions(shard))
        if f["kind"] == "zone_exit"
    ]
    assert len(exits) == 1
    # A crash after the relay but before the pop applies it twice: two entries, one source...
    source = exits[0]["source"]
    fields = [k for pair in exits[0].items() if pair[0] != "source" for k in pair]
    twice = json.dumps(["x", "transitions", source, *fields])
    relay.apply(client, {elder_id: [twice]})
    assert client.xlen(geofences_keys.transitions(shard)) == 2
    # ...and the alerts intake handles that exit once, acknowledging both.
    assert _consume_all(client, clock) == 2
    assert handled == [("zone_exit", source)]
    if recovery == "redelivery":
        # The dead writer's intent is left; the sweep unmarks it and finds nothing to apply.
        assert client.zcard(keys.relay_pending(shard)) == 1
        clock.advance(relay.SWEEP_AFTER_S + 1)
        assert Ticker(client, clock=clock, offline_after_s=1200).sweep_relays() == 0
    assert client.zcard(keys.relay_pending(shard)) == 0
    assert client.xlen(geofences_keys.transitions(shard)) == 2
