"""Shards (pure): an elder and her jobs always land in one shard; the keys carry its tag."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from devices import keys as devices_keys
from geofences import keys as geofences_keys
from locator.core import keys, shards
from locator.core.errors import ConfigError
from locator.core.settings import load_settings


@pytest.fixture(autouse=True)
def _default_count() -> Iterator[None]:
    yield
    shards.configure(shards.DEFAULT_SHARDS)


def test_an_elder_always_maps_to_one_shard_and_elders_spread_evenly() -> None:
    assert [shards.shard_of(e, 16) for e in (0, 1, 15, 16, 33)] == [0, 1, 15, 0, 1]
    spread = Counter(shards.shard_of(e, 16) for e in range(1, 16_001))
    assert set(spread.values()) == {1000}


def test_a_job_sits_in_its_elders_shard_else_in_a_stable_hashed_one() -> None:
    assert shards.shard_of_job("offline|37|b-1", 16) == shards.shard_of(37, 16) == 5
    assert shards.shard_of_job("sla|37|12", 16) == 5
    hashed = {shards.shard_of_job(f"deliver|3.i9.alert.volunteer:{n}.sms", 16) for n in range(64)}
    assert len(hashed) > 8  # spread, not all in one shard
    assert shards.shard_of_job("retention", 16) == shards.shard_of_job("retention", 16)


def test_shard_keys_share_one_tag_per_shard_and_elder_keys_stay_hers() -> None:
    shards.configure(8)
    job = "offline|13|b-1"
    assert keys.job_timers(job) == "hw:{s:5}:timers"
    assert keys.timer(job) == "hw:{s:5}:timer:offline|13|b-1"
    assert geofences_keys.transitions(5) == "hw:{s:5}:stream:transitions"
    assert devices_keys.device_events(5) == "hw:{s:5}:stream:device-events"
    assert keys.retention_streams_of(devices_keys.track(13, "b-1")) == "hw:{s:5}:retention:streams"
    assert keys.relay(13) == "hw:{e:13}:relay"
    assert keys.elder_of(geofences_keys.elder_transitions(13)) == 13
    with pytest.raises(ValueError, match="not a per-elder key"):
        keys.elder_of(keys.REJECTED)
    # The dead-letter script's three keys share one tag: one slot on a cluster.
    tags = {k.split("}")[0] for k in (keys.REJECTED, keys.REJECTED_COUNTS, keys.rejected_seen("x"))}
    assert tags == {"hw:{rejected"}


def test_the_count_is_bounded_in_settings_and_in_the_module() -> None:
    assert load_settings().shards == 16 and load_settings().redis_cluster is False
    assert load_settings(shards=1024, redis_cluster=True).shards == 1024
    with pytest.raises(ConfigError, match="HOMEWARD_SHARDS"):
        load_settings(shards=0)
    with pytest.raises(ConfigError, match="HOMEWARD_SHARDS"):
        load_settings(shards=1025)
    with pytest.raises(ValueError, match=r"1\.\.1024"):
        shards.configure(0)
    shards.configure(4)
    assert list(shards.every()) == [0, 1, 2, 3] and shards.count() == 4
