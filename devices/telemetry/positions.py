"""Her last position as other domains read it: a typed, frozen view of the position hash.

Pure. Only the ingest's store script writes the hash; ``read_position`` (sync and async)
and ``queue_read_position`` with ``parse_position`` (pipelines), in
``devices/telemetry/readers.py``, are the other domains' only way to it. The good fix is
the newest fix that was precise enough to decide on; the latest fix may be a cell-only or
far-off one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GoodFix:
    """Her newest fix that was good enough to decide on (precise, not a cell guess)."""

    lat: float
    lon: float
    tst: float
    acc: float


@dataclass(frozen=True)
class LastPosition:
    """Where she was last seen (never moved by a late, stale or rejected fix)."""

    lat: float
    lon: float
    tst: float
    order_t: float
    received_ms: float
    acc: float | None
    src: str
    device_id: str
    vel: float | None
    cog: float | None
    battery: int | None
    flags: tuple[str, ...]
    good: GoodFix | None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def parse_position(raw: Mapping[Any, Any]) -> LastPosition | None:
    """The typed position of an HGETALL reply; None before her first fix."""
    pos = {_text(k): _text(v) for k, v in raw.items()}
    good = None
    if pos.get("good_lat") and pos.get("good_lon") and pos.get("good_tst"):
        good = GoodFix(
            float(pos["good_lat"]),
            float(pos["good_lon"]),
            float(pos["good_tst"]),
            float(pos.get("good_acc") or 0.0),
        )
    if pos.get("lat") and pos.get("lon"):
        lat, lon = float(pos["lat"]), float(pos["lon"])
    elif good is not None:
        lat, lon = good.lat, good.lon  # only the good fix is known: that is where she was
    else:
        return None
    battery = pos.get("battery")
    return LastPosition(
        lat=lat,
        lon=lon,
        tst=float(pos.get("tst") or 0.0),
        order_t=float(pos.get("order_t") or 0.0),
        received_ms=float(pos.get("received_ms") or 0.0),
        acc=_float(pos.get("acc")),
        src=pos.get("src") or "gps",
        device_id=pos.get("device_id", ""),
        vel=_float(pos.get("vel")),
        cog=_float(pos.get("cog")),
        battery=int(battery) if battery else None,
        flags=tuple(f for f in pos.get("flags", "").split(",") if f),
        good=good,
    )
