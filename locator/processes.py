"""Heartbeat files of the long-running loops (ingest, ticker), for health checks."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STALE_AFTER_S = 30.0


def heartbeat_path(data_dir: Path, name: str) -> Path:
    return data_dir / "heartbeat" / name


def beat(data_dir: Path, name: str, **status: Any) -> None:
    """Record that ``name`` is alive, with its status (e.g. redis_ok=False in an outage)."""
    path = heartbeat_path(data_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"t": time.time(), **status}))
    tmp.replace(path)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    age_s: float
    status: dict[str, Any]

    def problem(self, max_age_s: float = STALE_AFTER_S) -> str | None:
        """Why this loop is unhealthy, or None."""
        if self.age_s > max_age_s:
            return f"no heartbeat for {self.age_s:.0f} s"
        if self.status.get("redis_ok") is False:
            return f"Redis unreachable: {self.status.get('error', '?')}"
        if self.status.get("mqtt_ok") is False:
            return "MQTT broker unreachable"
        return None


def read_heartbeat(data_dir: Path, name: str) -> Heartbeat | None:
    try:
        data = json.loads(heartbeat_path(data_dir, name).read_text())
        return Heartbeat(age_s=time.time() - float(data.pop("t")), status=data)
    except (OSError, ValueError, KeyError, TypeError):
        return None
