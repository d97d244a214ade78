"""A real ingest loop on the test broker and Redis, plus a QoS 1 publisher."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devices.ingest.batch import BatchOutcome
from locator.core.clock import Clock
from locator.core.mqtt import address
from locator.ingest_loop import WORKERS, IngestLoop


class Publisher:
    """A bracelet (or many): publishes QoS 1 and waits for the broker's PUBACK."""

    def __init__(self, mqtt_url: str, client_id: str | None = None) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or f"pub-{uuid.uuid4().hex[:8]}"
        )
        host, port = address(mqtt_url)
        self.client.connect(host, port)
        self.client.loop_start()

    def send(self, topic: str, payload: bytes | dict[str, Any], qos: int = 1) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        info = self.client.publish(topic, body, qos=qos)
        info.wait_for_publish(timeout=5)
        assert info.is_published(), f"broker did not take {topic}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class RunningIngest:
    def __init__(
        self,
        mqtt_url: str,
        redis_url: str,
        data_dir: Path,
        clock: Clock,
        client_id: str | None = None,
        workers: int = WORKERS,
    ) -> None:
        self.processed = 0
        self.outcomes: list[BatchOutcome] = []
        self._lock = threading.Lock()
        self.loop = IngestLoop(
            mqtt_url=mqtt_url,
            redis_url=redis_url,
            data_dir=data_dir,
            clock=clock,
            retention_s=30 * 86400,
            client_id=client_id or f"test-ingest-{uuid.uuid4().hex[:8]}",
            on_batch=self._count,
            workers=workers,
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop.run, args=(self.stop,), daemon=True)
        self.thread.start()
        assert self.loop.subscribed.wait(10), "ingest did not subscribe"

    def _count(self, outcome: BatchOutcome) -> None:
        # Called by every store worker of the loop: under the lock.
        with self._lock:
            self.processed += sum(v for k, v in outcome.outcomes.items() if ":" not in k)
            self.outcomes.append(outcome)

    def wait_processed(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.processed < n:
            assert time.monotonic() < deadline, f"processed {self.processed} of {n}"
            time.sleep(0.02)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)
