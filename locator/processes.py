"""Heartbeat files of the long-running loops (ingest, ticker) for container health checks."""

from __future__ import annotations

import time
from pathlib import Path

from locator.core.logging import get_logger

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
