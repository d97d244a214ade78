"""The alerts worker: alarms → incidents, the outbox → channels, the feed → MQTT.

Three loops, each a consumer in its Redis consumer group, so a crash leaves its pending
entries to be claimed again and nothing is handled twice in a way anyone notices (every
handler is idempotent per entry). Runs inside `homeward ticker` and `homeward run`.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis

from alerts import intake, links
from alerts.feed import feed_stream
from alerts.incidents.config import AlertsConfig
from alerts.notify import twilio
from alerts.notify.channels import Channel, LogChannel, MqttPushChannel
from alerts.notify.outbox import Deliverer
from alerts.notify.webpush import WebPush
from locator import processes, watchdog
from locator.core import streams
from locator.core.logging import get_logger
from locator.core.mqtt import BrokerUnavailable, Publisher
from locator.core.redis import stream_reply

log = get_logger(__name__)

EVENTS_TOPIC = "homeward/events/incidents"
RELAY_GROUP = "mqtt-events"


def consumer_name(role: str) -> str:
    return f"{role}-{socket.gethostname()}-{os.getpid()}"


def channels_for(
    client: redis.Redis, cfg: AlertsConfig, publisher: Publisher | None
) -> dict[str, Channel]:
    """The channel objects behind the configured channel names."""
    out: dict[str, Channel] = {"log": LogChannel()}
    if "mqtt" in cfg.channels and publisher is not None:
        out["mqtt"] = MqttPushChannel(publisher)
    settings = cfg.settings
    if settings is not None and "sms" in cfg.channels:
        assert settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from
        twilio_client = twilio.make_client(
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token,
            base_url=settings.twilio_base_url,
        )
        sender = {
            "from_": settings.twilio_from,
            "public_url": settings.public_url,
            "link_secret": links.secret(client),
        }
        out["sms"] = twilio.TwilioSms(twilio_client, **sender)  # type: ignore[arg-type]
        out["voice"] = twilio.TwilioVoice(twilio_client, **sender)  # type: ignore[arg-type]
    if settings is not None and "webpush" in cfg.channels and settings.vapid_private_key:
        out["webpush"] = WebPush(
            client,
            private_key=settings.vapid_private_key,
            subject=settings.vapid_subject or "mailto:ops@homeward.invalid",
        )
    return out


def relay_once(
    client: redis.Redis, publisher: Publisher, *, consumer: str, block_ms: int = 200
) -> int:
    """Publish new incident changes on ``homeward/events/incidents`` (at least once).

    What a broker outage (or a dead relay, named by its pid) left unpublished goes first:
    our own pending entries, then other consumers' idle ones, then new ones.
    """
    batches = stream_reply(
        client.xreadgroup(RELAY_GROUP, consumer, {feed_stream(): "0"}, count=100)
    )
    if not any(entries for _, entries in batches):
        claimed = streams.claim(
            client,
            stream=feed_stream(),
            group=RELAY_GROUP,
            consumer=consumer,
            min_idle_ms=30_000,
        )
        batches = [(feed_stream(), claimed)]
    if not any(entries for _, entries in batches):
        batches = stream_reply(
            client.xreadgroup(
                RELAY_GROUP, consumer, {feed_stream(): ">"}, count=100, block=block_ms
            )
        )
    sent = 0
    for _, entries in batches:
        # The feed is capped: an entry trimmed while pending is counted as lost, not relayed.
        entries = streams.live_entries(client, entries, stream=feed_stream(), group=RELAY_GROUP)
        for entry_id, fields in entries:
            if fields.get("type") == "incident":
                body = {
                    "event_id": entry_id,
                    "incident_id": int(fields["incident_id"]),
                    "elder_id": int(fields["elder_id"]),
                    "version": int(fields["version"]),
                    **json.loads(fields.get("data") or "{}"),
                }
                try:
                    publisher.publish(EVENTS_TOPIC, json.dumps(body, ensure_ascii=False).encode())
                except BrokerUnavailable:
                    return sent  # not acked: the pending entry is published after reconnect
                sent += 1
            client.xack(feed_stream(), RELAY_GROUP, entry_id)
    return sent


def ensure_groups(client: redis.Redis) -> None:
    intake.ensure_groups(client)
    try:
        client.xgroup_create(feed_stream(), RELAY_GROUP, id="$", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _loop(
    name: str,
    stop: threading.Event,
    data_dir: Path,
    body: Callable[[], object],
    beat: Callable[[], None],
) -> None:
    delay = 0.0
    last_beat = 0.0
    while not stop.is_set():
        try:
            body()
            if time.monotonic() - last_beat > 1.0:
                processes.beat(data_dir, name, redis_ok=True)
                beat()
                last_beat = time.monotonic()
            delay = 0.0
        except redis.RedisError as exc:
            log.warning("alerts_redis_unreachable", loop=name, error=str(exc))
            processes.beat(data_dir, name, redis_ok=False, error=str(exc))
            delay = min(max(delay * 2, 0.5), 5.0)
        if delay:
            stop.wait(delay)


def _beater(client: redis.Redis, cfg: AlertsConfig, name: str) -> Callable[[], None]:
    return lambda: watchdog.beat(client, name, now=cfg.clock.time())


def start_workers(
    client: redis.Redis,
    cfg: AlertsConfig,
    *,
    publisher: Publisher | None,
    stop: threading.Event,
    data_dir: Path,
) -> list[threading.Thread]:
    """Start the intake, delivery and relay loops as daemon threads."""
    ensure_groups(client)
    intake_consumer = consumer_name("alerts")
    channels = channels_for(client, cfg, publisher)
    deliverer = Deliverer(client, channels, consumer_name("delivery"), lane="chain")
    deliverer.ensure_group()
    pusher = Deliverer(client, channels, consumer_name("push"), lane="extra")
    pusher.ensure_group()
    claim_every = {"n": 0}

    def intake_body() -> None:
        claim_every["n"] += 1
        intake.consume_once(
            client, cfg, consumer=intake_consumer, claim=claim_every["n"] % 100 == 1
        )

    loops: list[tuple[str, Callable[[], object]]] = [
        ("alerts", intake_body),
        ("delivery", lambda: deliverer.run_once(now=cfg.clock.time())),
        ("push", lambda: pusher.run_once(now=cfg.clock.time())),
    ]
    if publisher is not None:
        relay_consumer = consumer_name("relay")
        loops.append(("relay", lambda: relay_once(client, publisher, consumer=relay_consumer)))
    threads = []
    for name, body in loops:
        thread = threading.Thread(
            target=_loop,
            args=(name, stop, data_dir, body, _beater(client, cfg, name)),
            name=f"homeward-{name}",
            daemon=True,
        )
        thread.start()
        threads.append(thread)
    return threads
