"""The ingest process: paho on its network thread, batches stored by a worker thread.

The network thread (``mqtt_burst.BurstClient``) only queues what one socket read brought,
as one burst; a worker builds batches from the bursts (up to BATCH_MAX messages or FLUSH_S
after the first, a burst split across batches when needed, order kept), stores each batch
in Redis, and only then acknowledges it (manual QoS 1 acks, one write per batch). While
Redis is unreachable the worker retries the same batch with backoff and acknowledges
nothing, so the broker keeps every message for us.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as paho
import redis
from prometheus_client import Gauge

from devices import reporting
from devices.ingest.pipeline import BatchOutcome, Message, UplinkStore
from geofences.evaluator import ZoneEvaluator
from locator import processes, watchdog
from locator.core import keys
from locator.core.clock import Clock
from locator.core.logging import get_logger
from locator.core.mqtt import address, connect_options, make_client
from locator.core.mqtt_burst import BurstClient, Delivery
from locator.core.redis import sync_client

log = get_logger(__name__)

UPLINK_TOPICS = ("homeward/devices/+/up", "owntracks/+/+", "owntracks/+/+/event")
# Must stay within the broker's in-flight window (deploy/mosquitto/mosquitto.conf: 400):
# the broker sends no more until we acknowledge, and we acknowledge only whole batches.
# Half the window, so the broker keeps sending the next batch while one is being stored.
BATCH_MAX = 200
FLUSH_S = 0.005
_REDIS_DOWN = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    redis.ReadOnlyError,
)
# Errors that mean "Redis cannot take writes right now", not "this message is bad".
_OUTAGE_REPLIES = ("OOM", "MISCONF", "LOADING", "MASTERDOWN", "NOREPLICAS", "READONLY", "BUSY")


def is_outage(exc: BaseException) -> bool:
    """True when storing must wait (hold acks, retry) rather than give up on the batch."""
    if isinstance(exc, _REDIS_DOWN):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(_OUTAGE_REPLIES)


REDIS_UP = Gauge("homeward_ingest_redis_up", "1 while the ingest can write to Redis")
MQTT_UP = Gauge("homeward_ingest_mqtt_connected", "1 while the ingest is connected to the broker")


def uplink_topics(group: str = "") -> tuple[str, ...]:
    """What the ingest subscribes to: with a group, one share of the uplink among its peers.

    The broker deals each message to one member of ``$share/<group>/`` (Mosquitto round-robin,
    EMQX by its strategy), so one bracelet's fixes may be handled by several processes and out
    of order: the store script and the versioned zone state keep each elder right.
    """
    if not group:
        return UPLINK_TOPICS
    return tuple(f"$share/{group}/{topic}" for topic in UPLINK_TOPICS)


def default_client_id() -> str:
    """Stable per host, so a restarted ingest resumes its persistent session."""
    return f"homeward-ingest-{socket.gethostname()}"


class IngestLoop:
    def __init__(
        self,
        *,
        mqtt_url: str,
        redis_url: str,
        data_dir: Path,
        clock: Clock,
        retention_s: int,
        offline_after_s: int = 1200,
        timezone: ZoneInfo | None = None,
        client_id: str | None = None,
        group: str = "",
        on_batch: Callable[[BatchOutcome], None] | None = None,
        adaptive_reporting: bool = True,
        cluster: bool = False,
    ) -> None:
        self._mqtt_url = mqtt_url
        self._redis = sync_client(redis_url, process="ingest", cluster=cluster)
        self._data_dir = data_dir
        self._clock = clock
        self._retention_s = retention_s
        self._offline_after_s = offline_after_s
        self._timezone = timezone or ZoneInfo("Asia/Shanghai")
        self._on_batch = on_batch
        self._adaptive = adaptive_reporting
        self.commands_sent = 0
        self.handled = 0  # messages this process stored (its share of a shared subscription)
        # One item per socket read: (connection generation, arrival time, its messages).
        self._queue: queue.Queue[tuple[int, float, list[Delivery]]] = queue.Queue()
        self._pending: list[Message] = []  # taken from the queue, not yet in a batch
        self.client_id = client_id or default_client_id()
        self.group = group
        self.topics = uplink_topics(group)
        self._client = make_client(
            mqtt_url,
            client_id=self.client_id,
            persistent=True,
            manual_ack=True,
            client_class=BurstClient,
        )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_burst = self._on_burst
        self.redis_ok = True
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # the broker confirmed the uplink subscriptions
        self._client.on_subscribe = lambda *_: self.subscribed.set()
        # Bumped on every CONNACK. A message id is only meaningful on the connection that
        # delivered it: after a reconnect the broker may reuse ids for new messages, so an
        # old message is acknowledged never (the broker redelivers it if it still has it).
        self._generation = 0

    # --- paho's network thread: no Redis here ---------------------------------------------
    def _on_connect(
        self, client: paho.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("ingest_connect_refused", reason=str(reason))
            return
        self._generation += 1
        # Subscribing on every connect restores the subscriptions if the broker lost the session.
        self.subscribed.clear()
        client.subscribe([(topic, 1) for topic in self.topics])
        MQTT_UP.set(1)
        self.connected.set()
        log.info(
            "ingest_connected",
            client_id=self.client_id,
            group=self.group or None,
            session_present=getattr(flags, "session_present", None),
        )

    def _on_disconnect(
        self, client: paho.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        MQTT_UP.set(0)
        self.connected.clear()
        log.warning("ingest_disconnected", reason=str(reason))

    def _on_burst(self, burst: list[Delivery]) -> None:
        self._queue.put((self._generation, self._clock.time(), burst))

    # --- the worker ----------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Connect, then store batches until ``stop`` is set."""
        store = self._store_with_retry(stop)
        if store is None:
            return
        host, port = address(self._mqtt_url)
        self._client.connect_async(
            host, port, keepalive=30, **connect_options(self._mqtt_url, persistent=True)
        )
        self._client.loop_start()
        last_beat = 0.0
        try:
            while not stop.is_set():
                batch = self._next_batch(stop)
                if batch:
                    if not self._store_batch(store, batch, stop):
                        return  # stopping with an unstored batch: unacknowledged, redelivered
                    self.handled += len(batch)
                    generation = self._generation
                    self._client.ack_many(
                        [m.mid for m in batch if m.qos == 1 and m.generation == generation]
                    )
                if time.monotonic() - last_beat > 1.0:
                    self._beat()
                    last_beat = time.monotonic()
        finally:
            self._client.disconnect()
            self._client.loop_stop()
            self._redis.close()

    def _store_with_retry(self, stop: threading.Event) -> UplinkStore | None:
        delay = 0.1
        while not stop.is_set():
            try:
                store = UplinkStore(
                    self._redis,
                    clock=self._clock,
                    retention_s=self._retention_s,
                    offline_after_s=self._offline_after_s,
                    evaluator=ZoneEvaluator(self._redis, timezone=self._timezone),
                )
                self._set_redis(True)
                return store
            except redis.RedisError as exc:
                self._set_redis(False, exc)
                self._beat(error=str(exc))
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
        return None

    def _next_batch(self, stop: threading.Event) -> list[Message]:
        pending = self._pending
        if not pending:
            try:
                self._take(self._queue.get(timeout=0.2))
            except queue.Empty:
                return []
        deadline = time.monotonic() + FLUSH_S
        while len(pending) < BATCH_MAX:
            remaining = deadline - time.monotonic()
            try:
                self._take(
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
        batch = pending[:BATCH_MAX]
        del pending[:BATCH_MAX]
        return batch

    def _take(self, item: tuple[int, float, list[Delivery]]) -> None:
        generation, received_at, burst = item
        self._pending += [
            Message(topic, payload, received_at, mid, qos, retain, generation)
            for topic, payload, mid, qos, retain in burst
        ]

    def _store_batch(self, store: UplinkStore, batch: list[Message], stop: threading.Event) -> bool:
        """Store a batch, retrying while Redis cannot write; False only if asked to stop first.

        Storage is idempotent (message ids in the store script, dead letters marked once),
        so retrying a batch that was partly written stores nothing twice.
        """
        delay = 0.1
        while True:
            try:
                try:
                    outcome = store.process(batch)
                except Exception as exc:
                    if is_outage(exc):
                        raise
                    log.exception("ingest_batch_failed", size=len(batch))
                    outcome = self._isolate(store, batch)
                self._set_redis(True)
                break
            except Exception as exc:
                if not is_outage(exc):
                    raise
                self._set_redis(False, exc)
                self._beat(error=str(exc))
                if stop.wait(delay):
                    return False
                delay = min(delay * 2, 5.0)
        self._go_fast(outcome)
        if self._on_batch is not None:
            self._on_batch(outcome)
        return True

    def _go_fast(self, outcome: BatchOutcome) -> None:
        """Adaptive reporting: a first fix outside asks the bracelet for fast fixes."""
        if not self._adaptive:
            return
        leaving = {elder_id for elder_id, _ in outcome.leaving}
        unsure = {e: (d, slow) for e, d, slow in outcome.unsure if e not in leaving}
        for elder_id, (device_id, slow) in unsure.items():
            self._adapt(reporting.follow_up, elder_id, device_id, window=slow)
        for elder_id, device_id in outcome.leaving:
            self._adapt(reporting.start_fast_mode, elder_id, device_id)

    def _adapt(
        self, action: Callable[..., object], elder_id: int, device_id: str, **extra: Any
    ) -> None:
        try:
            action(
                self._redis,
                self,
                elder_id=elder_id,
                device_id=device_id,
                now=self._clock.time(),
                **extra,
            )
        except Exception:  # a command that cannot go out must not stop the ingest
            log.exception(
                "adaptive_reporting_failed",
                action=action.__name__,
                elder_id=elder_id,
                device_id=device_id,
            )

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        """Downlink on the ingest's own connection (the Publisher protocol)."""
        info = self._client.publish(topic, payload, qos=qos)
        info.wait_for_publish(timeout=5)
        self.commands_sent += 1

    def _isolate(self, store: UplinkStore, batch: list[Message]) -> BatchOutcome:
        """A bug must not wedge the queue: store message by message, dead-letter what fails.

        An outage met here propagates, and the caller retries the whole batch.
        """
        total = BatchOutcome()
        for message in batch:
            try:
                one = store.process([message])
            except Exception as exc:
                if is_outage(exc):
                    raise
                log.exception("ingest_message_failed", topic=message.topic)
                pipe = self._redis.pipeline(transaction=True)
                pipe.xadd(
                    keys.REJECTED,
                    {
                        "reason": "internal_error",
                        "detail": f"{type(exc).__name__}: {exc}"[:300],
                        "topic": message.topic[:200],
                        "payload": message.payload[:1024].decode("utf-8", "replace"),
                        "received_ms": str(round(message.received_at * 1000)),
                    },
                    maxlen=10_000,
                    approximate=True,
                )
                pipe.hincrby(keys.REJECTED_COUNTS, "internal_error", 1)
                pipe.execute()
                total.outcomes["rejected"] += 1
                total.outcomes["rejected:internal_error"] += 1
                continue
            total.outcomes.update(one.outcomes)
            total.leaving += one.leaving
            total.unsure += one.unsure
            total.positions += one.positions
        return total

    def _beat(self, error: str | None = None) -> None:
        status = {
            "redis_ok": self.redis_ok,
            "mqtt_ok": self.connected.is_set(),
            "subscribed": self.subscribed.is_set(),
            "handled": self.handled,
        }
        processes.beat(self._data_dir, "ingest", **status, **({"error": error} if error else {}))
        now = self._clock.time()
        try:  # the oldest message not yet stored
            oldest = self._pending[0].received_at if self._pending else self._queue.queue[0][1]
            lag = max(0.0, now - oldest)
        except IndexError:
            lag = 0.0
        # When Redis is unreachable, the file heartbeat above already says so.
        with contextlib.suppress(redis.RedisError):
            watchdog.beat(self._redis, "ingest", now=now, lag_s=round(lag, 3), **status)

    def _set_redis(self, ok: bool, exc: Exception | None = None) -> None:
        if ok != self.redis_ok:
            log.warning("ingest_redis_state", up=ok, error=str(exc) if exc else None)
        self.redis_ok = ok
        REDIS_UP.set(1 if ok else 0)
