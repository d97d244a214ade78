"""The geofences domain's Redis keys: zones, zone state, pause, the zones version and her
transitions (and their shards). Only ``geofences`` imports this module (import-linter
contract): the ingest's store script gets these names from the zone evaluator.
The hash-tag rules are ``locator/core/keys.py``'s.
"""

from __future__ import annotations

from locator.core.keys import elder_tag, shard_stream


def zones(elder_id: int) -> str:
    return f"hw:{elder_tag(elder_id)}:zones"


def zone_state(elder_id: int) -> str:
    return f"hw:{elder_tag(elder_id)}:zonestate"


def pause(elder_id: int) -> str:
    return f"hw:{elder_tag(elder_id)}:pause"


def elder_transitions(elder_id: int) -> str:
    """The elder's capped stream of zone transitions (zone_exit, zone_enter, danger_enter)."""
    return f"hw:{elder_tag(elder_id)}:transitions"


ZONES_VERSION = "hw:zones:version"  # bumped on every zone or pause change: evaluator cache


def transitions(shard: int) -> str:
    """A shard of the zone transitions the alerts stage consumes (group ``alerts``)."""
    return shard_stream("transitions", shard)
