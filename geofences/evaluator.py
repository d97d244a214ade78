"""The ingest's zone stage: cached zones and states per elder, evaluated fix by fix.

Zone state lives in Redis (``hw:{e:<id>}:zonestate``, with a version ``v``) and is written
by the ingest's store script in the same commit as the fix. This class keeps a copy per
elder in process (one ingest owns an elder's fixes), evaluates speculatively, and hands the
script the expected version with the new state: a mismatch means another writer or a fix
the script did not store, and the elder is reloaded and evaluated again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import redis

from devices.ingest.position import Position
from geofences.engine import FixInput, Zone, ZoneState, evaluate
from geofences.geometry import LocalFrame, project_geometry
from locator.core import keys


@dataclass
class _ElderZones:
    frame: LocalFrame
    zones: list[Zone]
    states: dict[str, ZoneState]
    version: int
    pause_until: float | None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


class ZoneEvaluator:
    version_key = keys.ZONES_VERSION

    def __init__(self, client: redis.Redis, *, timezone: ZoneInfo) -> None:
        self._redis = client
        self._tz = timezone
        self._cache: dict[int, _ElderZones | None] = {}
        self._version: int | None = None

    def observe_version(self, version: int) -> None:
        """A zone or pause changed somewhere: reload elders as their fixes come in."""
        if self._version is not None and version != self._version:
            self._cache.clear()
        self._version = version

    def forget(self, elder_id: int) -> None:
        self._cache.pop(elder_id, None)

    def ensure_loaded(self, elder_ids: set[int]) -> None:
        """Load the elders not cached yet, all in one round trip."""
        missing = sorted(e for e in elder_ids if e not in self._cache)
        if not missing:
            return
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(keys.ZONES_VERSION)
        for elder_id in missing:
            pipe.get(keys.elder(elder_id))
            pipe.hgetall(keys.zones(elder_id))
            pipe.hgetall(keys.zone_state(elder_id))
            pipe.get(keys.pause(elder_id))
        results = pipe.execute()
        self.observe_version(int(results[0] or 0))
        for n, elder_id in enumerate(missing):
            elder_raw, zones_raw, states_raw, pause_raw = results[1 + 4 * n : 5 + 4 * n]
            self._cache[elder_id] = self._build(elder_raw, zones_raw, states_raw, pause_raw)

    def _build(
        self, elder_raw: Any, zones_raw: Any, states_raw: Any, pause_raw: Any
    ) -> _ElderZones | None:
        if not elder_raw or not zones_raw:
            return None  # no zones: nothing to evaluate until one is drawn
        elder = json.loads(elder_raw)
        frame = LocalFrame(elder["home"]["lat"], elder["home"]["lon"])
        zones = []
        for raw in zones_raw.values():
            doc = json.loads(raw)
            props = doc["properties"]
            shape = project_geometry(doc["geometry"], frame, props.get("radius_m"))
            zones.append(Zone(doc["id"], props["kind"], shape, props.get("schedule")))
        states = {
            _text(k) or "": ZoneState.from_json(json.loads(v))
            for k, v in states_raw.items()
            if _text(k) != "v"
        }
        pause_until = None
        if pause_raw:
            from datetime import datetime

            pause_until = datetime.fromisoformat(
                json.loads(pause_raw)["until"].replace("Z", "+00:00")
            ).timestamp()
        return _ElderZones(frame, zones, states, int(states_raw.get("v", 0) or 0), pause_until)

    def prepare(self, position: Position, *, low_quality: bool) -> tuple[str, str] | None:
        """Evaluate a fix; the (expected version, update) the store script applies with it."""
        cached = self._cache.get(position.elder_id)
        if cached is None:
            return None
        moment = min(position.fix_time, position.received_at)
        paused = cached.pause_until is not None and moment.timestamp() < cached.pause_until
        result = evaluate(
            cached.zones,
            cached.states,
            cached.frame,
            FixInput(position.lat, position.lon, position.accuracy_m, low_quality, position.alarm),
            local_time=moment.astimezone(self._tz),
            paused=paused,
        )
        if not result.changed:
            return None
        expected = cached.version
        update = {
            "states": {zone_id: state.to_json() for zone_id, state in result.states.items()},
            "transitions": [
                {"zone_id": t.zone_id, "kind": t.kind, "outside_all_safe": t.outside_all_safe}
                for t in result.transitions
            ],
        }
        # Speculative: the next fix of this elder in the same batch builds on this one.
        cached.states, cached.version = result.states, expected + 1
        return str(expected), json.dumps(update, separators=(",", ":"))

    def settle(self, elder_id: int, *, applied: bool) -> None:
        """The script stored the fix without its zone update (late, rejected): reload."""
        if not applied:
            self.forget(elder_id)
