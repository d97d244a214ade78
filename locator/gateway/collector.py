"""The standalone gateway's garbage-collector policy: no half-second pauses under load.

10,000 held sockets are ~700,000 long-lived objects (streams, transports, tasks). CPython's
full collection walks them all and, on the bench, stopped the loop for 100–600 ms a few
times a minute while freeing nothing: the p99 of publish-to-stored was those pauses. So
every ``freeze_s`` the objects alive then move to the permanent generation (``gc.freeze``:
a list splice), and automatic collections only walk what is younger (a short-lived object
frozen by chance is still freed by its reference count). Cycles among frozen
objects (a connection closed after its freeze) wait for the full collection done every
``full_s``, after an unfreeze: one pause an hour instead of several a minute.
"""

from __future__ import annotations

import asyncio
import gc
import time

from locator.core.logging import get_logger

log = get_logger(__name__)

FREEZE_S = 5.0
FULL_S = 3600.0


async def tend(*, freeze_s: float = FREEZE_S, full_s: float = FULL_S) -> None:
    """Freeze survivors every ``freeze_s``; unfreeze and collect everything every ``full_s``."""
    last_full = time.monotonic()
    try:
        while True:
            await asyncio.sleep(freeze_s)
            if time.monotonic() - last_full >= full_s:
                last_full = time.monotonic()
                gc.unfreeze()
                started = time.perf_counter()
                freed = gc.collect()
                pause_ms = round((time.perf_counter() - started) * 1000, 1)
                log.info("gateway_gc_full", freed=freed, pause_ms=pause_ms)
            gc.freeze()
    finally:
        gc.unfreeze()  # stopping: leave the process's collector as we found it
