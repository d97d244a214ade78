"""Adaptive reporting: on the first fix outside, ask the bracelet for fixes fast.

With 60 s fixes and a two-fix debounce, detection alone would eat most of the 3-minute
promise. So the first fix showing her outside a safe zone (or inside a danger zone) sends
``reportLocation`` and, to a native bracelet, ``setInterval 15``; ten minutes later the base
interval is restored unless an incident is open for the elder. One window per elder at a
time. OwnTracks phones only understand ``reportLocation``.

A fix that proves nothing (cell-only or > 100 m, or too close to the line for its
accuracy) is *unsure*. A cell-only or > 100 m fix asks the bracelet for a GPS fix at once
(``reportLocation``, the answer comes within seconds), whatever its interval. A slow
bracelet (base interval of two minutes or more) can cross the line just after an unsure fix
and not report again for ten minutes, so there any unsure fix asks, and an unsure answer
opens the fast window. At most four follow-ups per elder per hour: cell runs at home must
not keep a bracelet talking.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import redis

from devices import keys
from devices.ingest.codecs import NATIVE_TOPIC_PROTOCOLS
from devices.registry.commands import send_command
from locator.core import timers
from locator.core.logging import get_logger
from locator.core.mqtt import Publisher
from locator.core.timers import Job

log = get_logger(__name__)

FAST_INTERVAL_S = 15
WINDOW_S = 600
DEFAULT_BASE_INTERVAL_S = 60
# A safety net in Redis' own time, should the restore job be lost with its store.
STUCK_AFTER_S = 3 * WINDOW_S
FOLLOW_UP_MIN_BASE_S = 120  # at a 60 s base the next fix comes soon enough by itself
FOLLOW_UP_ANSWER_S = 90  # an unsure fix this soon after an ask is that ask's answer
FOLLOW_UPS_PER_HOUR = 4


def _device(client: redis.Redis, device_id: str) -> dict[str, object] | None:
    raw = client.get(keys.device(device_id))
    return json.loads(raw) if raw else None


def start_fast_mode(
    client: redis.Redis, publisher: Publisher, *, elder_id: int, device_id: str, now: float
) -> bool:
    """Open a fast-reporting window for the elder unless one is open; True if it opened."""
    if not client.set(keys.fast_mode(elder_id), device_id, nx=True, ex=STUCK_AFTER_S):
        return False
    timers.schedule(client, timers.job_id("fastmode", elder_id, device_id), due=now + WINDOW_S)
    device = _device(client, device_id)
    if device is None:
        return False
    send_command(publisher, device, action="reportLocation")
    if device["protocol"] in NATIVE_TOPIC_PROTOCOLS:  # OwnTracks has no interval command
        send_command(publisher, device, action="setInterval", seconds=FAST_INTERVAL_S)
    log.info("fast_mode_started", elder_id=elder_id, device_id=device_id)
    return True


def restore(
    client: redis.Redis,
    publisher: Publisher,
    job: Job,
    *,
    now: float,
    searching: Callable[[int], bool],
) -> str:
    """The window is over: back to the base interval, unless a search for her keeps it fast.

    ``searching(elder_id)`` says whether an incident is open for her: alerts knows, and
    devices sits below alerts, so the shell hands the question in.
    """
    elder, device_id = job.args
    elder_id = int(elder)
    if searching(elder_id):
        timers.schedule(client, job.id, due=now + WINDOW_S)
        return "extended"
    device = _device(client, device_id)
    if device is not None and device["protocol"] in NATIVE_TOPIC_PROTOCOLS:
        base = device.get("report_interval_s") or DEFAULT_BASE_INTERVAL_S
        send_command(publisher, device, action="setInterval", seconds=int(base))  # type: ignore[call-overload]
    client.delete(keys.fast_mode(elder_id))
    return "restored"


def is_slow(report_interval_s: int | None) -> bool:
    """Slow enough that waiting for the next fix after an unsure one risks the ten minutes."""
    return (report_interval_s or DEFAULT_BASE_INTERVAL_S) >= FOLLOW_UP_MIN_BASE_S


def follow_up(
    client: redis.Redis,
    publisher: Publisher,
    *,
    elder_id: int,
    device_id: str,
    now: float,
    window: bool = True,
) -> str:
    """An unsure fix: ask for one more; with ``window``, an unsure answer goes fast."""
    key = keys.follow_ups(elder_id)
    # One round trip for everything this decides on (reads and a trim: no transaction, so
    # her keys and the bracelet's record may sit in two cluster slots). Times are the
    # service clock's (simulated in the benchmark), not Redis' own.
    pipe = client.pipeline(transaction=False)
    pipe.exists(keys.fast_mode(elder_id))
    pipe.get(keys.device(device_id))
    pipe.zremrangebyscore(key, "-inf", now - 3600)
    pipe.zcount(key, now - FOLLOW_UP_ANSWER_S, "+inf")
    pipe.zcard(key)
    fast, raw_device, _, pending, asked = pipe.execute()
    if fast:
        return "fast_already"
    if raw_device is None:
        return "no_device"
    device = json.loads(raw_device)
    if pending:
        if not window:
            return "asked_already"  # a 60 s bracelet reports again soon anyway
        start_fast_mode(client, publisher, elder_id=elder_id, device_id=device_id, now=now)
        return "window"
    if asked >= FOLLOW_UPS_PER_HOUR:
        return "capped"
    pipe = client.pipeline(transaction=True)
    pipe.zadd(key, {f"{now:.3f}": now})
    pipe.expire(key, 3600)
    pipe.execute()
    send_command(publisher, device, action="reportLocation")
    log.info("follow_up_asked", elder_id=elder_id, device_id=device_id)
    return "asked"
