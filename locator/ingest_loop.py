"""The ingest process: paho on its network thread, batches stored by worker threads.

The network thread (``mqtt_burst.BurstClient``) only numbers and queues what one socket
read brought, dealt by device to ``workers`` lanes (``ingest_lanes``); each lane's worker
builds batches from its share (up to its batch size or FLUSH_S after the first, a burst
split across batches when needed, order kept), stores each batch in Redis with its own
``UplinkStore`` (two in flight: the next one sent while Redis still runs the one before),
and only then marks it done: the acks of the longest done prefix go out
in receive order (manual QoS 1 acks, one write). While Redis is unreachable a worker
retries the same batch with backoff and that batch holds back every later ack, so the
broker keeps every message not yet stored for us.
"""

from __future__ import annotations

import contextlib
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
from devices.ingest.batch import BatchOutcome, Message, Submitted
from devices.ingest.pipeline import UplinkStore
from geofences.evaluator import ZoneEvaluator
from locator import processes, watchdog
from locator.core import keys
from locator.core.clock import Clock
from locator.core.logging import get_logger
from locator.core.mqtt import address, connect_options, make_client
from locator.core.mqtt_burst import BurstClient, Delivery
from locator.core.redis import sync_client
from locator.ingest_lanes import AckSequencer, Lane, split

log = get_logger(__name__)

UPLINK_TOPICS = ("homeward/devices/+/up", "owntracks/+/+", "owntracks/+/+/event")
# Must stay within the broker's in-flight window (deploy/mosquitto/mosquitto.conf: 400):
# the broker sends no more until we acknowledge, and we acknowledge only whole batches.
# Half the window, so the broker keeps sending the next batch while one is being stored;
# with several workers, shared among them (each lane's batches are BATCH_MAX // workers).
BATCH_MAX = 200
FLUSH_S = 0.005
# One: each worker already builds and sends its next batch while Redis runs the one before
# (two in flight); a second thread added GIL hand-offs and no throughput (docs/BENCHMARKS.md).
WORKERS = 1
_REDIS_DOWN = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    redis.ReadOnlyError,
    # redis-py strips the "OOM" code from this one's text, so the prefix test below misses it.
    redis.exceptions.OutOfMemoryError,
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
        workers: int = WORKERS,
    ) -> None:
        if workers < 1:
            raise ValueError("an ingest needs at least one store worker")
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
        self._lanes = [
            Lane(batch_max=max(1, BATCH_MAX // workers), flush_s=FLUSH_S) for _ in range(workers)
        ]
        self._acks: AckSequencer[Message] = AckSequencer(self._ack)
        self._halt = threading.Event()  # set when a worker failed: the others stop too
        self._failure: BaseException | None = None
        self._count_lock = threading.Lock()  # commands_sent: any worker may send one
        self._beat_lock = threading.Lock()  # any worker may beat; one heartbeat file
        self._last_beat = 0.0
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
        first = self._acks.number(len(burst))
        generation, now, lanes = self._generation, self._clock.time(), self._lanes
        if len(lanes) == 1:
            lanes[0].queue.put((generation, now, range(first, first + len(burst)), burst))
            return
        for lane, (numbers, deliveries) in zip(lanes, split(burst, first, len(lanes)), strict=True):
            if deliveries:
                lane.queue.put((generation, now, numbers, deliveries))

    def _ack(self, messages: list[Message]) -> None:
        """Acknowledge stored messages, in receive order (``AckSequencer`` calls it)."""
        generation = self._generation
        self._client.ack_many(
            [m.mid for m in messages if m.qos == 1 and m.generation == generation]
        )

    @property
    def handled(self) -> int:
        """Messages this process stored (its share of a shared subscription)."""
        return sum(lane.handled for lane in self._lanes)

    @property
    def workers(self) -> int:
        return len(self._lanes)

    # --- the workers ---------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Connect, then store batches until ``stop`` is set; this thread is the first worker.

        Raises what made a worker fail (after every worker stopped), as one worker did.
        """
        self._halt.clear()
        self._failure = None
        for lane in self._lanes:
            lane.store = self._store_with_retry(stop)
            if lane.store is None:
                return
        host, port = address(self._mqtt_url)
        self._client.connect_async(
            host, port, keepalive=30, **connect_options(self._mqtt_url, persistent=True)
        )
        self._client.loop_start()
        others = [
            threading.Thread(
                target=self._work_guarded, args=(lane, stop), name=f"ingest-store-{n}", daemon=True
            )
            for n, lane in enumerate(self._lanes[1:], 1)
        ]
        try:
            for thread in others:
                thread.start()
            self._work(self._lanes[0], stop)
        except BaseException:
            self._halt.set()
            raise
        finally:
            self._halt.set()
            for thread in others:
                if thread.is_alive():
                    thread.join()
            self._client.disconnect()
            self._client.loop_stop()
            self._redis.close()
        if self._failure is not None:
            raise self._failure

    def _work_guarded(self, lane: Lane, stop: threading.Event) -> None:
        try:
            self._work(lane, stop)
        except BaseException as exc:
            log.exception("ingest_worker_failed")
            self._failure = self._failure or exc
            self._halt.set()

    def _work(self, lane: Lane, stop: threading.Event) -> None:
        """Store the lane's batches, two at a time: batch N+1 is decoded, built and sent
        while Redis still runs batch N, then N's replies are read and N acknowledged.

        Redis runs N+1 after N (one connection), so her fixes keep their order. Anything
        unusual (an outage, a failed script) falls back to storing batch by batch.
        """
        store = lane.store
        assert store is not None
        flight: tuple[Submitted, list[Message], list[int]] | None = None
        while not self._stopping(stop):
            batch, numbers = lane.next_batch(wait=flight is None)
            submitted = self._submit(store, batch) if batch else None
            if flight is not None:
                if not self._complete(store, lane, flight, stop, batch if submitted else None):
                    return  # stopping with an unstored batch: unacknowledged, redelivered
                flight = None
                if submitted is not None and not store.holds(submitted):
                    submitted = None  # dropped with the batch before it, which failed
            if submitted is not None:
                flight = (submitted, batch, numbers)
            elif batch:
                # Not sent: stored on its own (retried through an outage, failures isolated).
                if not self._store_batch(store, batch, stop):
                    return
                self._acknowledge(lane, batch, numbers)
            if time.monotonic() - self._last_beat > 1.0:
                self._beat(if_due=True)
        if flight is not None and not self._halt.is_set():
            # Asked to stop with a batch sent: read it, so it is acknowledged, not redelivered.
            self._complete(store, lane, flight, stop, None)

    def _submit(self, store: UplinkStore, batch: list[Message]) -> Submitted | None:
        """Send a batch's first write attempt; None if that failed (it is stored on its own)."""
        try:
            return store.submit(batch)
        except Exception as exc:
            if not is_outage(exc):
                log.exception("ingest_batch_failed", size=len(batch))
            return None

    def _complete(
        self,
        store: UplinkStore,
        lane: Lane,
        flight: tuple[Submitted, list[Message], list[int]],
        stop: threading.Event,
        following: list[Message] | None,
    ) -> bool:
        """Finish a batch in flight and acknowledge it; False only if asked to stop first.

        ``following``: the batch sent after it, still in flight. If this one fails, that one
        is dropped too (it rode on the same connection) and the caller stores it on its own.
        """
        submitted, batch, numbers = flight
        try:
            outcome = store.finish(submitted)
        except Exception as exc:
            if not is_outage(exc):
                log.exception("ingest_batch_failed", size=len(batch))
            store.abandon()
            if not self._store_batch(store, batch, stop):
                return False
        else:
            self._stored(outcome)
        self._acknowledge(
            lane, batch, numbers, next_in_flight=following[0].received_at if following else None
        )
        return True

    def _stored(self, outcome: BatchOutcome) -> None:
        """A batch is in Redis: say so, and act on what it did (fast mode, the caller's hook)."""
        self._set_redis(True)
        self._go_fast(outcome)
        if self._on_batch is not None:
            self._on_batch(outcome)

    def _acknowledge(
        self,
        lane: Lane,
        batch: list[Message],
        numbers: list[int],
        *,
        next_in_flight: float | None = None,
    ) -> None:
        """Mark a stored batch done: its acks go out once every earlier message's did."""
        lane.stored(len(batch), next_in_flight=next_in_flight)
        self._acks.done(zip(numbers, batch, strict=True))

    def _stopping(self, stop: threading.Event) -> bool:
        return stop.is_set() or self._halt.is_set()

    def _pause(self, stop: threading.Event, seconds: float) -> bool:
        """Wait ``seconds`` unless stopping first (asked to, or another worker failed)."""
        deadline = time.monotonic() + seconds
        while not self._stopping(stop):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            stop.wait(min(remaining, 0.1))
        return True

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
                break
            except Exception as exc:
                if not is_outage(exc):
                    raise
                self._set_redis(False, exc)
                self._beat(error=str(exc))
                if self._pause(stop, delay):
                    return False
                delay = min(delay * 2, 5.0)
        self._stored(outcome)
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
        with self._count_lock:
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
            total.fixes += one.fixes
        return total

    def _beat(self, error: str | None = None, *, if_due: bool = False) -> None:
        """Heartbeats (file, Redis); ``if_due``: only if none in the last second (another
        worker may have just beaten)."""
        with self._beat_lock:
            if if_due and time.monotonic() - self._last_beat <= 1.0:
                return
            self._last_beat = time.monotonic()
            status = {
                "redis_ok": self.redis_ok,
                "mqtt_ok": self.connected.is_set(),
                "subscribed": self.subscribed.is_set(),
                "handled": self.handled,
            }
            processes.beat(
                self._data_dir, "ingest", **status, **({"error": error} if error else {})
            )
            now = self._clock.time()
            # The oldest message not yet stored, over every lane (in a batch being stored too).
            oldest = [t for t in (lane.oldest() for lane in self._lanes) if t is not None]
            lag = max(0.0, now - min(oldest)) if oldest else 0.0
            # When Redis is unreachable, the file heartbeat above already says so.
            with contextlib.suppress(redis.RedisError):
                watchdog.beat(self._redis, "ingest", now=now, lag_s=round(lag, 3), **status)

    def _set_redis(self, ok: bool, exc: Exception | None = None) -> None:
        if ok != self.redis_ok:
            log.warning("ingest_redis_state", up=ok, error=str(exc) if exc else None)
        self.redis_ok = ok
        REDIS_UP.set(1 if ok else 0)
