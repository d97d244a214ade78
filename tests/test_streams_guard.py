"""Nothing that matters is trimmed unread: alarm streams are trimmed only behind every
consumer group, and an entry deleted under a pending read is logged and counted."""

from __future__ import annotations

import uuid

import redis
from structlog.testing import capture_logs

from alerts import intake
from alerts import keys as alerts_keys
from alerts.notify import outbox
from devices import keys as devices_keys
from geofences import keys as geofences_keys
from locator import watchdog
from locator.alerts_loop import RELAY_GROUP, relay_once
from locator.core import shards, streams
from locator.core.clock import ManualClock
from locator.core.mqtt import MqttPublisher
from locator.ticker import Ticker
from tests.alerts_harness import config, device_event, exit_event
from tests.conftest import Api

# Elder 1's shard of each alarm stream (the harness writes for elder 1).
TRANSITIONS = geofences_keys.transitions(shards.shard_of(1))
DEVICE_EVENTS = devices_keys.device_events(shards.shard_of(1))


def _ids(client: redis.Redis, stream: str) -> list[str]:
    return [str(entry_id) for entry_id, _ in client.xrange(stream)]


def test_a_group_that_has_not_acked_keeps_its_entries_through_a_trim(
    alerts_client: redis.Redis, clock: ManualClock
) -> None:
    client = alerts_client
    written = [exit_event(client, 1, clock, metres=300 + i) for i in range(10)]
    # An audit consumer group that has read nothing yet holds every entry.
    client.xgroup_create(TRANSITIONS, "audit", id="0")
    ticker = Ticker(client, clock=clock, offline_after_s=1200)
    read = client.xreadgroup(intake.GROUP, "c1", {TRANSITIONS: ">"}, count=6)
    got = [str(entry_id) for entry_id, _ in read[0][1]]
    assert got == written[:6]
    client.xack(TRANSITIONS, intake.GROUP, *written[:3])  # 4..6 pending, 7..10 unread
    assert ticker.trim_streams()[TRANSITIONS] == 0
    assert _ids(client, TRANSITIONS) == written

    client.xgroup_destroy(TRANSITIONS, "audit")
    assert ticker.trim_streams()[TRANSITIONS] == 3
    assert _ids(client, TRANSITIONS) == written[3:]  # the oldest pending entry stays

    client.xack(TRANSITIONS, intake.GROUP, *written[3:6])
    ticker.trim_streams()
    # Acked up to the 6th; the 7th..10th were never delivered to anyone.
    assert _ids(client, TRANSITIONS) == written[5:]


def test_alarm_streams_are_written_without_a_cap(
    alerts_client: redis.Redis, clock: ManualClock
) -> None:
    # With MAXLEN ~ 100000 on the writer, the oldest unsent pages would be gone here.
    client = alerts_client
    pipe = client.pipeline(transaction=False)
    for i in range(100_500):
        pipe.xadd(alerts_keys.OUTBOX, {"attempt": f"filler-{i}"})
    pipe.execute()
    outbox.enqueue(
        client,
        attempt="1.i1.alert.volunteer:1.sms",
        fields={"elder_id": 1, "recipient": "volunteer:1", "channel": "sms"},
        now=clock.time(),
    )
    assert client.xrange(alerts_keys.OUTBOX, count=1)[0][1] == {"attempt": "filler-0"}
    assert client.xlen(alerts_keys.OUTBOX) == 100_501


async def test_an_alarm_deleted_under_a_pending_read_is_logged_and_counted(
    api: Api, alerts_client: redis.Redis, clock: ManualClock
) -> None:
    client = alerts_client
    entry = device_event(client, 1, clock, "sos")
    client.xreadgroup(intake.GROUP, "dead-worker", {DEVICE_EVENTS: ">"}, count=10)
    # The worker died with it pending long ago; then something trimmed it away.
    client.xclaim(DEVICE_EVENTS, intake.GROUP, "dead-worker", 0, [entry], idle=60_000)
    client.xdel(DEVICE_EVENTS, entry)

    with capture_logs() as logs:
        intake.consume_once(client, config(clock), consumer="alive", block_ms=10, claim=True)
    lost = [e for e in logs if e["event"] == "stream_entry_lost"]
    assert lost and lost[0]["entries"] == [entry] and lost[0]["log_level"] == "error"
    assert client.xpending(DEVICE_EVENTS, intake.GROUP)["pending"] == 0  # not claimed again
    counts, _ = streams.lost_counts(client)
    assert counts == {(DEVICE_EVENTS, intake.GROUP): 1}

    metrics = await api.http.get("/metrics", headers=api.auth("admin"))
    assert (
        f'homeward_stream_entries_lost_total{{group="alerts",stream="{DEVICE_EVENTS}"}} 1.0'
        in metrics.text
    )
    assessment = watchdog.assess(client, now=clock.time())
    assert assessment.status == "degraded"
    assert any("deleted before they were handled" in w for w in assessment.warnings)
    # An hour later the banner clears; the counter stays.
    assert watchdog.assess(client, now=clock.time() + 3700).status == "ok"


def test_an_entry_deleted_under_a_pending_reread_is_counted_not_relayed(
    alerts_client: redis.Redis, mqtt_url: str
) -> None:
    client = alerts_client
    entry = str(
        client.xadd(alerts_keys.FEED, {"type": "incident", "incident_id": "1", "elder_id": "1"})
    )
    client.xreadgroup(RELAY_GROUP, "relay-1", {alerts_keys.FEED: ">"}, count=10)
    client.xdel(alerts_keys.FEED, entry)
    publisher = MqttPublisher(mqtt_url, client_id=f"test-relay-{uuid.uuid4().hex[:8]}")
    try:
        assert relay_once(client, publisher, consumer="relay-1", block_ms=10) == 0
    finally:
        publisher.close()
    counts, at = streams.lost_counts(client)
    assert counts == {(alerts_keys.FEED, RELAY_GROUP): 1} and at is not None
    assert client.xpending(alerts_keys.FEED, RELAY_GROUP)["pending"] == 0
