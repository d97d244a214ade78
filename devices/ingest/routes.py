"""Topic → (device, elder): the ingest's cache of device bindings, one Redis read per miss.

The cache may be wrong (a device re-bound since): the store script re-checks the binding and
answers ``stale_route``, and the registry's version (read with every batch) clears the cache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from devices import keys
from devices.ingest.codecs import NATIVE_TOPIC_PROTOCOLS, Route
from locator.core.clock import Clock
from locator.core.redis import get_many

NEGATIVE_CACHE_S = 30.0


@dataclass(frozen=True, slots=True)
class Target:
    device_id: str
    elder_id: int
    offline_after_s: int | None = None
    report_interval_s: int | None = None


class DeviceRoutes:
    """Topic → (device, elder), cached in process; the store script re-checks the binding."""

    def __init__(self, client: redis.Redis, clock: Clock) -> None:
        self._redis = client
        self._clock = clock
        self._known: dict[Route, Target] = {}
        self._unknown: dict[Route, tuple[float, int]] = {}  # route -> (until, version)
        self.version: int | None = None

    def observe_version(self, version: int) -> None:
        """Forget every cached route once any device was (un)registered since we looked."""
        if self.version is not None and version != self.version:
            self._known.clear()
            self._unknown.clear()
        self.version = version

    def forget(self, route: Route) -> None:
        self._known.pop(route, None)
        self._unknown.pop(route, None)

    def resolve(self, routes: set[Route]) -> dict[Route, Target | None]:
        """Targets for routes; unknown routes map to None."""
        now = self._clock.time()
        answer: dict[Route, Target | None] = {}
        misses: list[Route] = []
        negatives: list[Route] = []
        known, unknown = self._known, self._unknown
        for route in routes:
            target = known.get(route)
            if target is not None:
                answer[route] = target
            elif route in unknown and unknown[route][0] > now:
                negatives.append(route)
            else:
                misses.append(route)
        if negatives:
            # A registration since the miss was cached makes the cached "unknown" wrong.
            version = int(self._redis.get(keys.DEVICES_VERSION) or 0)
            for route in negatives:
                if self._unknown[route][1] == version:
                    answer[route] = None
                else:
                    misses.append(route)
        if misses:
            answer.update(self._load(misses, now))
        return answer

    def _load(self, routes: list[Route], now: float) -> dict[Route, Target | None]:
        version = int(self._redis.get(keys.DEVICES_VERSION) or 0)
        self.observe_version(version)
        device_ids: dict[Route, str | None] = {}
        external = [r for r in routes if r.protocol != "native"]
        if external:
            found = get_many(
                self._redis, [keys.device_external(r.protocol, r.ref) for r in external]
            )
            device_ids.update(zip(external, found, strict=True))
        for route in routes:
            if route.protocol == "native":
                device_ids[route] = route.ref
        wanted = [(r, d) for r, d in device_ids.items() if d]
        docs = get_many(self._redis, [keys.device(d) for _, d in wanted]) if wanted else []
        answer: dict[Route, Target | None] = dict.fromkeys(routes)
        for (route, device_id), raw in zip(wanted, docs, strict=True):
            if raw is None:
                continue
            doc: dict[str, Any] = json.loads(raw)
            registered = doc.get("protocol", "native")
            if route.protocol == "native":
                if registered not in NATIVE_TOPIC_PROTOCOLS:
                    continue
            elif registered != route.protocol:
                continue
            found_target = Target(
                device_id=str(device_id),
                elder_id=int(doc["elder_id"]),
                offline_after_s=doc.get("offline_after_s"),
                report_interval_s=doc.get("report_interval_s"),
            )
            self._known[route] = found_target
            self._unknown.pop(route, None)
            answer[route] = found_target
        for route, maybe in answer.items():
            if maybe is None:
                self._unknown[route] = (now + NEGATIVE_CACHE_S, version)
        return answer
