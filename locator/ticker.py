"""The ticker process: fires due timers (SLA steps, offline checks, delivery retries) and
runs the alerts worker (alarms → incidents, outbox → channels, feed → MQTT)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis
from prometheus_client import Counter

from alerts.incidents import drill_runs, paging, storage
from alerts.incidents.config import AlertsConfig
from alerts.notify import outbox
from alerts.responders import migrate as responders_migrate
from devices import liveness, reporting
from devices.telemetry import archive as track_archive
from devices.telemetry.archive import TrackArchive
from locator import archiving, processes, retention, watchdog
from locator.core import migrate, relay, streams, timers
from locator.core.clock import Clock
from locator.core.logging import get_logger
from locator.core.mqtt import MqttPublisher, Publisher
from locator.core.timers import Job, TimerQueue

log = get_logger(__name__)

FIRED = Counter("homeward_timers_fired_total", "Timer jobs handled", ["kind", "result"])
POLL_S = 0.5
# The alarm streams are trimmed behind their consumer groups this often (they have no MAXLEN).
TRIM_EVERY_S = 60.0

Handler = Callable[[Job, float], str]


class Ticker:
    def __init__(
        self,
        client: redis.Redis,
        *,
        clock: Clock,
        offline_after_s: int,
        publisher: Publisher | None = None,
        alerts: AlertsConfig | None = None,
        retention_policy: retention.Retention | None = None,
        archive: TrackArchive | None = None,
    ) -> None:
        self._redis = client
        self._clock = clock
        self._queue = TimerQueue(client)
        self._publisher = publisher
        self.handlers: dict[str, Handler] = {
            "offline": lambda job, now: liveness.handle_offline(
                client, job, now=now, default_after_s=offline_after_s
            ),
            "fastmode": self._restore_interval,
            "deliver": lambda job, now: outbox.requeue(client, job.args[0]),
        }
        if alerts is not None:
            self.handlers["sla"] = lambda job, now: paging.run_step(client, alerts, job)
            self.handlers["drill"] = lambda job, now: drill_runs.run_scheduled(client, alerts, job)
        # A store written before shards: its timers, index, alarms moved in once.
        migrate.to_shards(client)
        responders_migrate.to_tags(client)
        # One job for every ticker: the claim's lease keeps two from running it at once.
        self._retention = retention_policy
        if retention_policy is not None:
            self.handlers[retention.JOB] = self._sweep
            timers.ensure(client, retention.JOB, due=clock.time())
        self._archive = archive
        if archive is not None and retention_policy is not None:
            self.handlers[archiving.JOB] = self._move_tracks
            timers.ensure(client, archiving.JOB, due=clock.time())

    def sweep_relays(self) -> int:
        """Apply what ingest or offline calls that died left on relay lists (rare: a crash).

        Run from the loop, not as a timer job: two tickers sweeping at once is harmless
        (a relay applied twice is absorbed), and the timers stay the domains' jobs.
        """
        return relay.sweep(self._redis, now=self._clock.time())

    def _sweep(self, job: Job, now: float) -> str:
        assert self._retention is not None
        retention.sweep(self._redis, self._retention, now=now)
        # Rescheduled before completing: the new due time stands (a new token).
        timers.schedule(self._redis, retention.JOB, due=now + retention.EVERY_S)
        return "swept"

    def _move_tracks(self, job: Job, now: float) -> str:
        assert self._archive is not None and self._retention is not None
        archiving.run(self._redis, self._archive, now=now, retention_s=self._retention.track_s)
        timers.schedule(self._redis, archiving.JOB, due=now + archiving.EVERY_S)
        return "archived"

    def _restore_interval(self, job: Job, now: float) -> str:
        if self._publisher is None:
            raise RuntimeError("no MQTT broker: cannot restore the reporting interval yet")
        return reporting.restore(
            self._redis,
            self._publisher,
            job,
            now=now,
            searching=lambda elder_id: storage.open_incident_id(self._redis, elder_id) is not None,
        )

    def run_once(self, *, limit: int = 100) -> list[tuple[Job, str]]:
        """Claim what is due now, run it, complete it; a failing job is retried after its lease."""
        now = self._clock.time()
        done: list[tuple[Job, str]] = []
        for job in self._queue.claim(now=now, limit=limit):
            handler = self.handlers.get(job.kind)
            if handler is None:
                log.error("timer_kind_unknown", job=job.id)
                self._queue.complete(job)
                FIRED.labels(job.kind, "unknown").inc()
                continue
            try:
                result = handler(job, now)
            except redis.RedisError:
                raise
            except Exception:
                log.exception("timer_failed", job=job.id)
                FIRED.labels(job.kind, "error").inc()
                continue
            self._queue.complete(job)
            FIRED.labels(job.kind, result).inc()
            done.append((job, result))
        return done

    def trim_streams(self) -> dict[str, int]:
        """Drop alarm-stream entries every consumer group has acknowledged, and nothing else."""
        removed = streams.trim_handled(self._redis)
        if any(removed.values()):
            by_kind: dict[str, int] = {}
            for stream, count in removed.items():
                kind = stream.rsplit(":", 1)[-1]
                by_kind[kind] = by_kind.get(kind, 0) + count
            log.info("streams_trimmed", **by_kind)
        return removed

    def run(self, stop: threading.Event, *, data_dir: Path) -> None:
        """Poll for due jobs until ``stop``; survives a Redis outage by retrying."""
        delay = POLL_S
        last_trim = last_relay = 0.0
        while not stop.is_set():
            try:
                self.run_once()
                if time.monotonic() - last_trim > TRIM_EVERY_S:
                    last_trim = time.monotonic()
                    self.trim_streams()
                if time.monotonic() - last_relay > relay.EVERY_S:
                    last_relay = time.monotonic()
                    self.sweep_relays()
                delay = 0.0 if self._queue.saturated else POLL_S
                processes.beat(data_dir, "ticker", redis_ok=True)
                watchdog.beat(self._redis, "ticker", now=self._clock.time())
            except redis.RedisError as exc:
                log.warning("ticker_redis_unreachable", error=str(exc))
                processes.beat(data_dir, "ticker", redis_ok=False, error=str(exc))
                delay = min(max(delay * 2, POLL_S), 5.0)
            stop.wait(delay)


def run_ticker(
    redis_url: str,
    *,
    clock: Clock,
    offline_after_s: int,
    data_dir: Path,
    stop: threading.Event,
    mqtt_url: str | None = None,
    alerts: AlertsConfig | None = None,
    cluster: bool = False,
) -> None:
    """The ticker loop, and (given ``alerts``) the alerts worker threads beside it."""
    from locator.alerts_loop import start_workers
    from locator.core.redis import sync_client

    client = sync_client(redis_url, process="ticker", cluster=cluster)
    publisher = (
        MqttPublisher(mqtt_url, client_id=f"homeward-ticker-{socket.gethostname()}-{os.getpid()}")
        if mqtt_url
        else None
    )
    try:
        ticker = Ticker(
            client,
            clock=clock,
            offline_after_s=offline_after_s,
            publisher=publisher,
            alerts=alerts,
            retention_policy=(
                retention.Retention.from_settings(alerts.settings)
                if alerts is not None and alerts.settings is not None
                else None
            ),
            archive=track_archive.for_settings(alerts.settings if alerts is not None else None),
        )
        workers = []
        if alerts is not None:
            workers = start_workers(
                client, alerts, publisher=publisher, stop=stop, data_dir=data_dir
            )
        ticker.run(stop, data_dir=data_dir)
        for worker in workers:
            worker.join(timeout=5)
    finally:
        if publisher is not None:
            publisher.close()
        client.close()
