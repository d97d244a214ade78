"""The broker queue `bench ingest` drains: persistent sessions and the count-only drains.

A drain empties a persistent session the bench filled while nobody was connected; the
count-only ones measure the MQTT path alone (broker delivery and client receive), the
ceiling the full ingest is compared with. CPU seconds come from /proc (``Window``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import paho.mqtt.client as paho

from locator.bench.procstat import CpuShare, cpu_s
from locator.core.mqtt import address, connect_options, make_client
from locator.core.mqtt_burst import BurstClient, Delivery
from locator.ingest_loop import UPLINK_TOPICS


def open_session(mqtt_url: str, client_id: str) -> None:
    """Create a persistent session with the uplink subscriptions, then leave it queueing."""
    client = make_client(mqtt_url, client_id=client_id, persistent=True)
    subscribed = threading.Event()
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_connect = lambda c, *args: c.subscribe([(t, 1) for t in UPLINK_TOPICS])
    host, port = address(mqtt_url)
    client.connect(host, port, **connect_options(mqtt_url, persistent=True))
    client.loop_start()
    if not subscribed.wait(10):
        raise RuntimeError("broker did not confirm the subscription")
    client.disconnect()
    client.loop_stop()


def close_session(mqtt_url: str, client_id: str) -> None:
    """Drop a persistent session, or the broker keeps queueing every later fix for it too."""
    client = make_client(mqtt_url, client_id=client_id, persistent=False)
    host, port = address(mqtt_url)
    client.connect(host, port)
    client.loop_start()
    client.disconnect()
    client.loop_stop()


def _rate(
    client: paho.Client,
    mqtt_url: str,
    done: threading.Event,
    expected: int,
    received: Callable[[], str],
) -> float:
    """Connect, wait until ``done``, disconnect: messages per second from the connect."""
    host, port = address(mqtt_url)
    started = time.perf_counter()
    client.connect(host, port, **connect_options(mqtt_url, persistent=True))
    client.loop_start()
    if not done.wait(600):
        raise RuntimeError(f"{received()} of {expected}")
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return expected / elapsed


def drain_bare(mqtt_url: str, client_id: str, expected: int) -> float:
    """A subscriber that only counts (auto-ack): the broker + paho ceiling on this machine."""
    client = make_client(mqtt_url, client_id=client_id, persistent=True)
    count = 0
    done = threading.Event()

    def on_message(*args: object) -> None:
        nonlocal count
        count += 1
        if count >= expected:
            done.set()

    client.on_message = on_message
    return _rate(client, mqtt_url, done, expected, lambda: f"bare drain received {count}")


def drain_burst(mqtt_url: str, client_id: str, expected: int) -> float:
    """The ingest's client counting only: its MQTT receive and acknowledge path, no store.

    Each read's burst is acknowledged at once in one write (``ack_many``), as the stock
    drain's paho acknowledges each message on receipt.
    """
    client = make_client(
        mqtt_url, client_id=client_id, persistent=True, manual_ack=True, client_class=BurstClient
    )
    count = 0
    done = threading.Event()

    def on_burst(burst: list[Delivery]) -> None:
        nonlocal count
        count += len(burst)
        client.ack_many([mid for _, _, mid, qos, _ in burst if qos == 1])
        if count >= expected:
            done.set()

    client.on_burst = on_burst
    return _rate(client, mqtt_url, done, expected, lambda: f"burst drain received {count}")


def timed_drain(
    mqtt_url: str,
    drain: Callable[[str, str, int], float],
    *,
    client_id: str,
    fixes: int,
    fill: Callable[[], object],
    pids: dict[str, int],
) -> tuple[float, CpuShare]:
    """Queue ``fixes`` for a new persistent session, drain them: (rate, CPU per fix)."""
    open_session(mqtt_url, client_id)
    fill()
    window = Window(pids)
    window.start()
    rate = drain(mqtt_url, client_id, fixes)
    cpu = CpuShare(window.stop(), fixes)
    close_session(mqtt_url, client_id)
    return rate, cpu


class Window:
    """CPU seconds of named processes between ``start`` and ``stop``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._before: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def start(self) -> None:
        self._before = {name: cpu_s(pid) for name, pid in self._pids.items()}

    def stop(self) -> dict[str, float]:
        self.seconds = {name: cpu_s(pid) - self._before[name] for name, pid in self._pids.items()}
        return self.seconds
