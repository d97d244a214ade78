"""The ingest's store workers: each one's share of the uplink, and the acks in receive order.

Several workers store at once, so that one decodes and packs a batch while another waits
on Redis (the GIL is released while it waits). The network thread numbers every message
as it arrives and deals each bracelet's messages to one lane (``lane_of``): they are
stored in the order received (a buffered run of fixes is not "late") and cached by one
worker only. MQTT wants the PUBACKs in the order the PUBLISHes were received (3.1.1 and 5,
section 4.6), whichever worker stored its batch first: ``AckSequencer`` sends the acks of
the longest stored prefix only.
"""

from __future__ import annotations

import queue
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

from devices.ingest.batch import Message
from devices.ingest.pipeline import UplinkStore
from locator.core.mqtt_burst import Delivery

T = TypeVar("T")

# One socket read's share for a lane: (connection generation, arrival time, the receive
# numbers of its messages, the messages).
Share = tuple[int, float, Sequence[int], list[Delivery]]


def lane_of(topic: str, lanes: int) -> int:
    """The lane of a topic's device: the same one for all its messages, in every run.

    An OwnTracks phone publishes locations on owntracks/<user>/<device> and transitions on
    that topic plus /event: one device, so one lane.
    """
    if topic.endswith("/event"):
        topic = topic[:-6]
    return zlib.crc32(topic.encode()) % lanes


def split(burst: list[Delivery], first: int, lanes: int) -> list[tuple[list[int], list[Delivery]]]:
    """A burst's messages per lane, in order, each with its receive number (``first`` up)."""
    parts: list[tuple[list[int], list[Delivery]]] = [([], []) for _ in range(lanes)]
    for number, delivery in enumerate(burst, first):
        numbers, deliveries = parts[lane_of(delivery[0], lanes)]
        numbers.append(number)
        deliveries.append(delivery)
    return parts


class AckSequencer(Generic[T]):
    """Releases done items in receive-number order: the longest done prefix, at once.

    ``number`` belongs to one thread (paho's network thread); ``done`` may be called from
    any, and calls ``release`` under its lock, so releases (ack writes) never overtake
    each other. An item never done (a batch that could not be stored) holds back every
    later one: the broker redelivers them all, and storing is idempotent.
    """

    def __init__(self, release: Callable[[list[T]], object]) -> None:
        self._release = release
        self._lock = threading.Lock()
        self._next = 0  # the number the next received message gets
        self._released = 0  # every number below this one has been released
        self._done: dict[int, T] = {}  # done, waiting for an earlier number

    def number(self, count: int) -> int:
        """The first of ``count`` consecutive receive numbers."""
        first = self._next
        self._next += count
        return first

    def done(self, items: Iterable[tuple[int, T]]) -> int:
        """Mark (number, item) pairs done; release the done prefix. How many were released."""
        with self._lock:
            done = self._done
            done.update(items)
            start = at = self._released
            while at in done:
                at += 1
            if at == start:
                return 0
            released = [done.pop(n) for n in range(start, at)]
            self._released = at
            self._release(released)
            return len(released)

    @property
    def waiting(self) -> int:
        """Items done but held back by an earlier one not done yet."""
        return len(self._done)


class Lane:
    """One worker's share of the uplink: read bursts in order, cut into batches."""

    def __init__(self, *, batch_max: int, flush_s: float) -> None:
        self.queue: queue.Queue[Share] = queue.Queue()
        self.batch_max = batch_max
        self.flush_s = flush_s
        self.store: UplinkStore | None = None  # the worker's own (its caches, its evaluator)
        self.handled = 0  # messages this lane stored
        # When the first message of the batch being stored arrived (None between batches).
        self.storing: float | None = None
        self._pending: list[Message] = []  # taken from the queue, not yet in a batch
        self._numbers: list[int] = []  # their receive numbers

    def next_batch(self, *, wait: bool = True) -> tuple[list[Message], list[int]]:
        """Up to ``batch_max`` messages, or what arrived within ``flush_s`` of the first
        (waiting at most 0.2 s for one); their receive numbers.

        ``wait=False`` (a batch is in flight): a batch only from a backlog of at least half
        ``batch_max`` that has arrived already; else none, and the one in flight is finished
        first (small batches sent back to back would cost more per message than they save).
        """
        pending = self._pending
        if not wait:
            while len(pending) < self.batch_max:
                try:
                    self._take(self.queue.get_nowait())
                except queue.Empty:
                    break
            if len(pending) < max(1, self.batch_max // 2):
                return [], []
        elif not pending:
            try:
                self._take(self.queue.get(timeout=0.2))
            except queue.Empty:
                return [], []
        deadline = time.monotonic() + (self.flush_s if wait else 0.0)
        while len(pending) < self.batch_max:
            remaining = deadline - time.monotonic()
            try:
                self._take(
                    self.queue.get(timeout=remaining) if remaining > 0 else self.queue.get_nowait()
                )
            except queue.Empty:
                break
        size = self.batch_max
        batch, numbers = pending[:size], self._numbers[:size]
        del pending[:size], self._numbers[:size]
        if self.storing is None:  # else an older batch is still being stored
            self.storing = batch[0].received_at
        return batch, numbers

    def _take(self, share: Share) -> None:
        generation, received_at, numbers, burst = share
        self._pending += [
            Message(topic, payload, received_at, mid, qos, retain, generation)
            for topic, payload, mid, qos, retain in burst
        ]
        self._numbers += numbers

    def stored(self, count: int, *, next_in_flight: float | None = None) -> None:
        """``count`` messages stored; ``next_in_flight``: when the first of the batch still
        being stored arrived, if there is one."""
        self.handled += count
        self.storing = next_in_flight

    def oldest(self) -> float | None:
        """When the oldest message this lane has not stored arrived; None if it has none.

        Read from another thread: each step reads one value, and a list emptied meanwhile
        reads as nothing left.
        """
        storing = self.storing
        if storing is not None:
            return storing
        try:
            return self._pending[0].received_at
        except IndexError:
            pass
        try:
            share: Share = self.queue.queue[0]
        except IndexError:
            return None
        return share[1]
