"""A batch in the ingest: messages as received, what each became, what a batch did.

The store (``pipeline.UplinkStore``) turns each ``Message`` into a ``Pending`` uplink (for a
store call) or a ``Reject`` (a dead letter); a batch is ``Submitted`` with its first write
attempt ``Sent``, and finished into a ``BatchOutcome``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from devices.ingest.codecs import Fix, Route, Uplink
from devices.ingest.position import Position
from devices.ingest.routes import Target
from devices.ingest.store_script import PreparedUpdate

DEAD_LETTER_PAYLOAD_CHARS = 1024


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT message as received; ``received_at`` is stamped on arrival by the clock."""

    topic: str
    payload: bytes
    received_at: float
    mid: int = 0
    qos: int = 0
    retain: bool = False  # replayed by the broker from its retained store on subscribe
    generation: int = 0  # which MQTT connection delivered it (acks go back on that one only)


class StoredFix(Protocol):
    def position(self) -> Position: ...


@dataclass
class BatchOutcome:
    """What a batch did: counts by outcome and the fixes stored (for later stages)."""

    outcomes: Counter[str] = field(default_factory=Counter)
    # Each stored fix with its verdict; its Position is built only when asked for (``positions``).
    fixes: list[tuple[StoredFix, str]] = field(default_factory=list)
    leaving: list[tuple[int, str]] = field(default_factory=list)  # (elder, device): go fast
    # (elder, device, slow): a fix that proved nothing, worth asking the bracelet about
    unsure: list[tuple[int, str, bool]] = field(default_factory=list)

    @property
    def positions(self) -> list[tuple[Position, str]]:
        """The fixes stored, as Positions, with their verdicts."""
        return [(fix.position(), verdict) for fix, verdict in self.fixes]


@dataclass(slots=True)
class Pending:
    message: Message
    route: Route
    uplink: Uplink
    target: Target
    salvaged: bool = False  # an alarm rescued from a fix that could not be used
    zone_update: PreparedUpdate | None = None  # the zone stage's update riding with the fix
    skip_zones: bool = False  # a last attempt stores the fix without a zone update
    _position: Position | None = None

    def position(self) -> Position:
        """The fix as a Position, built once for the zone stage and the batch outcome."""
        if self._position is None:
            assert isinstance(self.uplink, Fix)
            self._position = Position.from_fix(
                self.uplink,
                device_id=self.target.device_id,
                elder_id=self.target.elder_id,
                received_at=self.message.received_at,
            )
        return self._position


Call = tuple[Pending, list[str], list[str]]  # an uplink in a store call: its keys, args


@dataclass(slots=True)
class Sent:
    """One write attempt on its way to Redis: its pipeline, replies not read yet."""

    pipe: Any
    marks: int  # replies of the intent marks at its head
    rejects: list[Reject]
    calls: list[list[Call]]
    intended: set[int]  # its batch's: a redo marks into the same set


@dataclass(slots=True)
class Submitted:
    """A batch whose first write attempt is sent (``UplinkStore.submit``): ``finish`` it."""

    batch: list[Message]
    outcome: BatchOutcome
    started: float
    throttled: dict[Route, list[Message]]
    sent: Sent  # its first write attempt (its ``intended``: every elder the batch marked)


@dataclass(slots=True)
class Reject:
    message: Message
    reason: str
    detail: str
    target: Target | None

    def identity(self) -> str:
        raw = self.message.topic.encode() + b"\0" + self.message.payload
        return hashlib.blake2b(raw, digest_size=12).hexdigest()

    def fields(self) -> dict[str, str]:
        """The dead-letter entry: enough to see what the device sent and why we refused."""
        return {
            "reason": self.reason,
            "detail": self.detail,
            "topic": self.message.topic[:200],
            "payload": self.message.payload[:DEAD_LETTER_PAYLOAD_CHARS].decode("utf-8", "replace"),
            "device_id": self.target.device_id if self.target else "",
            "elder_id": str(self.target.elder_id) if self.target else "",
            "received_ms": str(round(self.message.received_at * 1000)),
        }
