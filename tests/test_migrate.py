"""A store written before shards: its timers, retention index, dead letters and unhandled
alarms are moved into the shard layout once, when a ticker starts; responder records
written before their hash tags are renamed once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from alerts import intake
from alerts import keys as alerts_keys
from alerts.responders import migrate as responders_migrate
from devices import keys as devices_keys
from geofences import keys as geofences_keys
from locator.core import keys, migrate, shards, timers
from locator.core.clock import ManualClock
from locator.core.redis import sync_client
from locator.ticker import Ticker
from tests.alerts_harness import config
from tests.conftest import Api


@pytest.fixture
def client(redis: object, redis_url: str) -> Iterator[redis.Redis]:
    sync = sync_client(redis_url, process="test")
    yield sync
    sync.close()


def test_a_pre_shard_store_is_moved_into_the_shards_once(
    client: redis.Redis, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = clock.time()
    track = devices_keys.track(7, "b-7")
    client.xadd(track, {"tst": str(now), "received_ms": str(now * 1000)})
    client.zadd(migrate.LEGACY_RETENTION, {track: now})
    client.zadd(keys.LEGACY_TIMERS, {"offline|7|b-7": now + 600})
    client.xadd(migrate.LEGACY_REJECTED, {"reason": "too_fast", "lat": "30.5"})
    client.hset(migrate.LEGACY_REJECTED_COUNTS, mapping={"too_fast": 3})
    client.hset(keys.REJECTED_COUNTS, "too_fast", 1)  # a new ingest counted one already
    legacy = migrate.LEGACY_ALARMS["transitions"]
    client.xgroup_create(legacy, migrate.ALERTS_GROUP, id="$", mkstream=True)
    handled = client.xadd(legacy, {"kind": "zone_exit", "elder_id": "7", "outside_all_safe": "1"})
    client.xreadgroup(migrate.ALERTS_GROUP, "old", {legacy: ">"})
    client.xack(legacy, migrate.ALERTS_GROUP, handled)
    waiting = client.xadd(legacy, {"kind": "zone_exit", "elder_id": "7", "outside_all_safe": "1"})

    Ticker(client, clock=clock, offline_after_s=1200)
    assert migrate.legacy_keys(client) == []
    assert timers.due_at(client, "offline|7|b-7") == now + 600
    assert client.zscore(keys.retention_streams_of(track), track) == now
    assert [f["reason"] for _, f in client.xrange(keys.REJECTED)] == ["too_fast"]
    assert client.hget(keys.REJECTED_COUNTS, "too_fast") == "4"
    # Only the alarm nobody handled moved, named as the old intake named it.
    shard_stream = geofences_keys.transitions(shards.shard_of(7))
    moved = [f for _, f in client.xrange(shard_stream)]
    assert [f["source"] for f in moved] == [f"transitions@{waiting}"]
    assert migrate.to_shards(client) == {}  # once: nothing is left to move

    seen: list[str] = []

    def record(_: Any, __: Any, source: str, fields: dict[str, str]) -> str:
        seen.append(source)
        return "recorded"

    monkeypatch.setitem(intake.HANDLERS, "transitions", record)
    intake.ensure_groups(client)  # made after the move: its group already reads from "0"
    assert intake.consume_once(client, config(clock), consumer="c", block_ms=0) == 1
    assert seen == [f"transitions@{waiting}"]


def test_a_store_from_before_the_cluster_clean_commit_keeps_its_pages_and_feed(
    client: redis.Redis, clock: ManualClock
) -> None:
    sent, waiting = "7.i1.t0.volunteer:1.sms", "7.i1.t0.volunteer:2.sms"
    client.hset(f"hw:attempt:{sent}", mapping={"status": "sent", "elder_id": "7"})
    client.hset(f"hw:attempt:{waiting}", mapping={"status": "queued", "elder_id": "7"})
    for group in migrate.OUTBOX_GROUPS:
        client.xgroup_create(migrate.LEGACY_OUTBOX, group, id="$", mkstream=True)
    first = client.xadd(migrate.LEGACY_OUTBOX, {"attempt": sent})
    for group in migrate.OUTBOX_GROUPS:
        client.xreadgroup(group, "old", {migrate.LEGACY_OUTBOX: ">"})
        client.xack(migrate.LEGACY_OUTBOX, group, first)
    client.xadd(migrate.LEGACY_OUTBOX, {"attempt": waiting})
    old_feed = client.xadd(migrate.LEGACY_FEED, {"type": "incident", "incident_id": "1"})
    client.set(migrate.LEGACY_SYSTEM_STATE, "degraded")

    moved = migrate.to_shards(client)
    assert moved["attempts"] == 2 and moved["outbox"] == 1 and moved["feed"] == 1
    assert client.hget(alerts_keys.attempt(waiting), "status") == "queued"
    assert client.hget(alerts_keys.attempt(sent), "status") == "sent"
    assert [f["attempt"] for _, f in client.xrange(alerts_keys.outbox_of(waiting))] == [waiting]
    # The feed kept its ids: a client's Last-Event-ID still resumes after its entry.
    assert [i for i, _ in client.xrange(alerts_keys.FEED)] == [old_feed]
    assert client.get(keys.SYSTEM_STATE) == "degraded"
    assert migrate.legacy_keys(client) == []
    # The delivery group reads what moved (created at "0" before the move).
    read: Any = client.xreadgroup(
        migrate.OUTBOX_GROUPS[0], "new", {alerts_keys.outbox_of(waiting): ">"}, count=10
    )
    assert [f["attempt"] for _, entries in read for _, f in entries] == [waiting]


async def test_responders_written_before_their_hash_tags_are_renamed_once_and_still_answer(
    api: Api, client: redis.Redis
) -> None:
    # What a store held before {vol}/{disp}: records, the id index, the phone maps.
    volunteer = {
        "id": 4,
        "name": "王芳",
        "phone": "+8613800000004",
        "on_duty": True,
        "quiet_hours": None,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    }
    client.set("hw:volunteer:4", json.dumps(volunteer))
    client.set(
        "hw:volunteer:4:loc",
        json.dumps({"lat": 30.5, "lon": 120.6, "acc": 10, "at": "2026-01-01T00:00:00Z"}),
    )
    client.zadd("hw:volunteers", {"4": 4})
    client.hset("hw:volunteers:phones", "+8613800000004", 4)
    client.set("hw:dispatcher:2", json.dumps({"id": 2, "name": "D", "phone": "+8613900000002"}))
    client.zadd("hw:dispatchers", {"2": 2})
    client.hset("hw:dispatchers:phones", "+8613900000002", 2)

    assert responders_migrate.to_tags(client) == 6
    assert responders_migrate.to_tags(client) == 0  # once: a re-run moves nothing
    assert client.get(alerts_keys.volunteer(4)) and client.get(alerts_keys.dispatcher(2))
    assert client.exists("hw:volunteer:4:loc")  # not a record: keeps its name
    listed = await api.http.get("/api/v1/volunteers", headers=api.auth("admin"))
    assert [v["id"] for v in listed.json()["items"]] == [4]
    # The moved phone map still refuses the number to anyone else.
    taken = await api.http.post(
        "/api/v1/volunteers",
        json={"name": "X", "phone": "+8613800000004", "on_duty": True},
        headers=api.auth("admin"),
    )
    assert taken.status_code == 409, taken.text
