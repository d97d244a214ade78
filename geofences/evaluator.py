"""The ingest's zone stage: cached zones and states per elder, evaluated fix by fix.

Zone state lives in Redis (``hw:{e:<id>}:zonestate``, with a version ``v``) and is written
by the ingest's store script in the same commit as the fix. This class keeps a copy per
elder in process and evaluates speculatively; every evaluation of a current fix goes to the
script with the version it was computed against, even one that changes nothing. With several
ingest processes (a shared subscription) one elder's fixes are handled by all of them, so a
cached copy is often stale: the script refuses a fix whose version moved (``zone_conflict``),
nothing is written, and the elder is reloaded and evaluated again. A stale copy can thus
never decide a transition, nor fail to reset a streak (which would let two outside fixes
with an inside one between them confirm an exit).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

import redis

from devices.elders.records import ElderRecord, parse_elder
from devices.elders.service import queue_read_elder
from devices.ingest.position import Position
from devices.telemetry.positions import parse_position
from devices.telemetry.readers import queue_read_position
from geofences import keys
from geofences.engine import FixInput, Zone, ZoneState, evaluate
from geofences.geometry import LocalFrame, project_geometry
from locator.core.clock import parse_iso


@dataclass
class _ElderZones:
    frame: LocalFrame
    zones: list[Zone]
    states: dict[str, ZoneState]
    version: int
    pause_until: float | None
    order_t: float = 0.0  # order time of the last stored fix: older fixes are late


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class PreparedUpdate:
    """A zone update riding with one fix: applied by the store script, or not at all."""

    elder_id: int
    expected: str
    payload: str
    states: dict[str, ZoneState]
    order_t: float
    leaving: bool = False
    unsure: bool = False
    # False when the fix changes no zone state: nothing to write, but the version is still
    # checked (the fix was judged against that state: a newer one may judge it otherwise).
    writes: bool = True

    def args(self) -> tuple[str, str]:
        return (self.expected, self.payload if self.writes else "")

    @property
    def version(self) -> int:
        """The zone-state version once the script applied this update."""
        return int(self.expected) + (1 if self.writes else 0)


def _pieces(text: str) -> dict[str, str]:
    """``-- @piece <name>`` sections of ``zone_commit.lua`` (the header before them dropped)."""
    parts = re.split(r"^-- @piece (\w+)\s*$", text, flags=re.M)
    return {name: body.strip("\n") for name, body in zip(parts[1::2], parts[2::2], strict=True)}


_PIECES = _pieces(resources.files("geofences").joinpath("zone_commit.lua").read_text("utf-8"))


def lua_pieces() -> dict[str, str]:
    """The zone stage's pieces of the store script (``zone_commit.lua``), by slot name."""
    return dict(_PIECES)


class ZoneEvaluator:
    version_key = keys.ZONES_VERSION

    def __init__(self, client: redis.Redis, *, timezone: ZoneInfo) -> None:
        self._redis = client
        self._tz = timezone
        self._cache: dict[int, _ElderZones | None] = {}
        # What this attempt's earlier fixes would make of an elder, until the script confirms.
        self._overlay: dict[int, tuple[dict[str, ZoneState], int, float]] = {}
        self._version: int | None = None

    def lua_pieces(self) -> dict[str, str]:
        """The zone stage's pieces of the store script (``zone_commit.lua``), by slot name."""
        return lua_pieces()

    def script_keys(self, elder_id: int) -> list[str]:
        """Her zone state and transitions: the store script's keys 8 and 9."""
        return [keys.zone_state(elder_id), keys.elder_transitions(elder_id)]

    def begin(self) -> None:
        """A new write attempt: guesses of an attempt that did not land are discarded."""
        self._overlay.clear()

    def observe_version(self, version: int) -> None:
        """A zone or pause changed somewhere: reload elders as their fixes come in."""
        if self._version is not None and version != self._version:
            self._cache.clear()
        self._version = version

    def forget(self, elder_id: int) -> None:
        self._cache.pop(elder_id, None)
        self._overlay.pop(elder_id, None)

    def ensure_loaded(self, elder_ids: set[int]) -> None:
        """Load the elders not cached yet: one round trip, two when some have zones.

        Most elders' first look finds no zones (nothing to evaluate): only their zones are
        read, not their record, zone state, pause and last position as well.
        """
        missing = sorted(e for e in elder_ids if e not in self._cache)
        if not missing:
            return
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(keys.ZONES_VERSION)
        for elder_id in missing:
            pipe.hgetall(keys.zones(elder_id))
        version, *found = pipe.execute()
        self.observe_version(int(version or 0))
        with_zones = [(e, z) for e, z in zip(missing, found, strict=True) if z]
        for elder_id, zones_raw in zip(missing, found, strict=True):
            if not zones_raw:
                self._cache[elder_id] = None  # no zones: nothing to evaluate until one is drawn
        if not with_zones:
            return
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(keys.ZONES_VERSION)
        for elder_id, _ in with_zones:
            queue_read_elder(pipe, elder_id=elder_id)
            pipe.hgetall(keys.zone_state(elder_id))
            pipe.get(keys.pause(elder_id))
            queue_read_position(pipe, elder_id=elder_id)
        version, *results = pipe.execute()
        # A zone drawn between the two reads: the next batch reloads (the version moved).
        self.observe_version(int(version or 0))
        for n, (elder_id, zones_raw) in enumerate(with_zones):
            elder_raw, states_raw, pause_raw, pos_raw = results[4 * n : 4 * n + 4]
            built = self._build(parse_elder(elder_raw, elder_id), zones_raw, states_raw, pause_raw)
            if built is not None:
                last = parse_position(pos_raw)
                built.order_t = last.order_t if last else 0.0
            self._cache[elder_id] = built

    def _build(
        self, elder: ElderRecord | None, zones_raw: Any, states_raw: Any, pause_raw: Any
    ) -> _ElderZones | None:
        if elder is None or elder.home is None or not zones_raw:
            return None  # no zones: nothing to evaluate until one is drawn
        frame = LocalFrame(*elder.home)
        zones = []
        for raw in zones_raw.values():
            doc = json.loads(raw)
            props = doc["properties"]
            shape = project_geometry(doc["geometry"], frame, props.get("radius_m"))
            created = props.get("created_at")
            created_t = parse_iso(created).timestamp() if created else 0.0
            zones.append(Zone(doc["id"], props["kind"], shape, props.get("schedule"), created_t))
        states = {
            _text(k) or "": ZoneState.from_json(json.loads(v))
            for k, v in states_raw.items()
            if _text(k) != "v"
        }
        pause_until = None
        if pause_raw:
            pause_until = parse_iso(json.loads(pause_raw)["until"]).timestamp()
        return _ElderZones(frame, zones, states, int(states_raw.get("v", 0) or 0), pause_until)

    def watches(self, elder_id: int) -> bool:
        """She has zones to evaluate (``ensure_loaded`` first): most elders have none."""
        return self._cache.get(elder_id) is not None

    def prepare(self, position: Position, *, low_quality: bool) -> PreparedUpdate | None:
        """Evaluate a fix; the update the store script applies with it (if it stores the fix)."""
        cached = self._cache.get(position.elder_id)
        if cached is None:
            return None
        states, version, last_order_t = self._overlay.get(
            position.elder_id, (cached.states, cached.version, cached.order_t)
        )
        moment = min(position.fix_time, position.received_at)
        moment_t = moment.timestamp()
        if moment_t < last_order_t:
            return None  # a late fix: stored in the track, never moves the elder or a zone
        paused = cached.pause_until is not None and moment_t < cached.pause_until
        result = evaluate(
            cached.zones,
            states,
            cached.frame,
            FixInput(position.lat, position.lon, position.accuracy_m, low_quality, position.alarm),
            local_time=moment.astimezone(self._tz),
            paused=paused,
        )
        if not result.changed and not result.leaving:
            self._overlay[position.elder_id] = (states, version, moment_t)
            return PreparedUpdate(
                elder_id=position.elder_id,
                expected=str(version),
                payload="",
                states=states,
                order_t=moment_t,
                unsure=result.unsure,
                writes=False,
            )
        update = {
            "states": {zone_id: state.to_json() for zone_id, state in result.states.items()},
            "transitions": [
                {"zone_id": t.zone_id, "kind": t.kind, "outside_all_safe": t.outside_all_safe}
                for t in result.transitions
            ],
        }
        self._overlay[position.elder_id] = (result.states, version + 1, moment_t)
        return PreparedUpdate(
            elder_id=position.elder_id,
            expected=str(version),
            payload=json.dumps(update, separators=(",", ":")),
            states=result.states,
            order_t=moment_t,
            leaving=result.leaving,
            unsure=result.unsure,
        )

    def settle(self, update: PreparedUpdate, *, applied: bool) -> None:
        """Make a confirmed update the cached truth; anything else means reload."""
        cached = self._cache.get(update.elder_id)
        if not applied or cached is None:
            self.forget(update.elder_id)
            return
        cached.states = update.states
        cached.version = update.version
        cached.order_t = max(cached.order_t, update.order_t)
