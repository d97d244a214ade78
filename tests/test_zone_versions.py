"""Two ingest stores on one Redis, each with its own zone cache (two ingest processes sharing
the uplink, in miniature): a stale cache can neither confirm nor skip a step of an exit."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis

from devices import keys as devices_keys
from devices.ingest.batch import Message
from devices.ingest.pipeline import UplinkStore
from devices.ingest.position import Position
from geofences import keys as geofences_keys
from geofences.evaluator import PreparedUpdate, ZoneEvaluator
from locator.core.clock import ManualClock
from locator.core.redis import sync_client
from tests.alerts_harness import north
from tests.conftest import Api, both_backends
from tests.factories import register_elder_at_home

UP = "homeward/devices/z-1/up"
TZ = ZoneInfo("Asia/Shanghai")


# Once more on the local 3-master Redis Cluster, where the API registered her itself.
pytestmark = both_backends


@pytest.fixture
def client(elder_id: int, store_url: str, on_cluster: bool) -> Iterator[redis.Redis]:
    """A blocking client on the store under test, where the API set her up."""
    sync = sync_client(store_url, process="test", cluster=on_cluster)
    yield sync
    sync.close()


def _store(client: redis.Redis, clock: ManualClock, evaluator: ZoneEvaluator) -> UplinkStore:
    return UplinkStore(client, clock=clock, retention_s=86400, evaluator=evaluator)


@pytest.fixture
async def elder_id(api: Api) -> int:
    return await register_elder_at_home(api, device_id="z-1")


def _send(store: UplinkStore, clock: ManualClock, metres: float) -> dict[str, int]:
    """One fix ``metres`` north of home, 10 s after the last (so never too fast)."""
    clock.advance(10)
    body: dict[str, Any] = {"_type": "location", "tst": clock.time(), "acc": 5, **north(metres)}
    return dict(store.process([Message(UP, json.dumps(body).encode(), clock.time())]).outcomes)


def _exits(client: redis.Redis, elder_id: int) -> int:
    entries = client.xrange(geofences_keys.elder_transitions(elder_id))
    return sum(1 for _, fields in entries if fields["kind"] == "zone_exit")


async def test_a_stale_cache_cannot_skip_the_inside_fix_between_two_outside_ones(
    client: redis.Redis, clock: ManualClock, elder_id: int
) -> None:
    a = _store(client, clock, ZoneEvaluator(client, timezone=TZ))
    b = _store(client, clock, ZoneEvaluator(client, timezone=TZ))
    for store in (a, b, a):  # both caches learn "inside"
        assert _send(store, clock, 0)["stored"] == 1
    assert _send(a, clock, 250)["stored"] == 1  # A: outside, one of the two it takes
    # B's cache still says "inside, no streak": by it this fix changes nothing. It must still
    # be judged against the stored state (streak 1), which it resets.
    assert _send(b, clock, 0)["stored"] == 1
    assert _send(a, clock, 250)["stored"] == 1
    assert _exits(client, elder_id) == 0, "outside, inside, outside is not two in a row"
    assert _send(b, clock, 260)["stored"] == 1
    assert _exits(client, elder_id) == 1
    assert _send(a, clock, 270)["stored"] == 1  # A's stale cache cannot announce it again
    assert _exits(client, elder_id) == 1


class _AlwaysStale(ZoneEvaluator):
    """A zone stage whose every guess is of a version that is gone."""

    def prepare(self, position: Position, *, low_quality: bool) -> PreparedUpdate | None:
        update = super().prepare(position, low_quality=low_quality)
        return None if update is None else dataclasses.replace(update, expected="999")


async def test_a_fix_whose_zone_state_never_settles_is_stored_and_breaks_the_streak(
    client: redis.Redis, clock: ManualClock, elder_id: int
) -> None:
    good = _store(client, clock, ZoneEvaluator(client, timezone=TZ))
    for _ in range(2):
        _send(good, clock, 0)
    _send(good, clock, 250)  # streak 1 towards outside
    stale = _store(client, clock, _AlwaysStale(client, timezone=TZ))
    assert _send(stale, clock, 255)["stored"] == 1  # stored all the same, never lost
    state = json.loads(
        next(v for k, v in client.hgetall(geofences_keys.zone_state(elder_id)).items() if k != "v")
    )
    assert (state["t"], state["s"], state["to"]) == ("inside", 0, None)
    _send(good, clock, 260)
    assert _exits(client, elder_id) == 0, "an unevaluated fix may delay an exit, never make one"
    _send(good, clock, 265)
    assert _exits(client, elder_id) == 1
    assert client.xlen(devices_keys.track(elder_id, "z-1")) == 6
