"""Long-running loops besides the API: ingest and ticker.

Both are placeholders until their issues ("Bracelet ingest I/II"): they prove their wiring
(Redis reachable), beat a heartbeat file for health checks, and stop on signal.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from locator.core.logging import get_logger
from locator.core.redis import sync_client

log = get_logger(__name__)

HEARTBEAT_EVERY_S = 5.0


def heartbeat_path(data_dir: Path, name: str) -> Path:
    return data_dir / "heartbeat" / name


def beat(data_dir: Path, name: str) -> None:
    path = heartbeat_path(data_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(time.time()))


def heartbeat_age(data_dir: Path, name: str) -> float | None:
    try:
        return time.time() - float(heartbeat_path(data_dir, name).read_text())
    except (OSError, ValueError):
        return None


def idle_loop(name: str, *, redis_url: str, data_dir: Path, stop: threading.Event) -> None:
    """Keep a process alive and visibly healthy until its real work is built."""
    client = sync_client(redis_url, process=name)
    log.info("process_started", process=name, built=False)
    try:
        while not stop.is_set():
            try:
                client.ping()
                beat(data_dir, name)
            except Exception as exc:  # a flaky Redis must not kill the loop
                log.warning("process_redis_unreachable", process=name, error=str(exc))
            stop.wait(HEARTBEAT_EVERY_S)
    finally:
        client.close()
        log.info("process_stopped", process=name)
