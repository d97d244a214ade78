"""`homeward bench soak` at a tiny scale (the province run is quoted in docs/BENCHMARKS.md)."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from devices import keys
from locator.core.errors import ConfigError
from locator.core.redis import is_cluster


def test_a_tiny_soak_stores_every_fix_and_its_accounting_sees_one_dropped() -> None:
    """Real broker, two real ingest processes, one Redis; one stored fix deleted before
    counting must show as exactly one lost fix (the rest exact), and the rate as not held."""
    from locator.bench import soak

    result = soak.run(
        bracelets=200, interval_s=5.0, duration_s=10.0, backend="single", tamper=_drop_one
    )
    _assert_one_lost(result)
    assert set(result.rss) == {"ingest-0", "ingest-1", "redis", "broker"}
    assert "Redis: one embedded server" in soak.report(result)


def test_a_tiny_soak_on_the_cluster_counts_through_the_cluster_client() -> None:
    """The same soak on a local 3-master cluster (the ingests run with REDIS_CLUSTER):
    registered, stored and counted there, every node's RSS, CPU and memory in the report."""
    from locator.bench import soak

    seen: list[bool] = []

    def drop_one_on_the_cluster(client: redis.Redis) -> None:
        seen.append(is_cluster(client))
        _drop_one(client)

    result = soak.run(
        bracelets=200, interval_s=5.0, duration_s=10.0, tamper=drop_one_on_the_cluster
    )
    assert result.backend == "cluster" and seen == [True]
    _assert_one_lost(result)
    nodes = {"redis-0", "redis-1", "redis-2"}
    assert set(result.rss) == {"ingest-0", "ingest-1", "broker"} | nodes
    assert nodes <= set(result.cpu_s)
    # Bracelets spread over three masters, and their memory is the sum of the three.
    assert set(result.node_memory) == set(result.node_growth) == nodes
    grown = sum(result.node_growth.values())
    assert result.registry_bytes_per_bracelet * 200 < grown
    assert all(growth > grown / 5 for growth in result.node_growth.values())
    assert result.registry_bytes_per_bracelet > 0 and result.bytes_per_stored_fix > 0
    text = soak.report(result)
    assert "Redis: a local 3-master cluster" in text
    assert all(f"  {node}" in text for node in nodes)


def _drop_one(client: redis.Redis) -> None:
    from locator.bench import soak

    track = keys.track(1, soak.device_name(0))
    first = client.xrange(track, count=1)
    assert first, "bracelet 0 stored nothing"
    client.xdel(track, first[0][0])


def _assert_one_lost(result: Any) -> None:
    from locator.bench import soak

    acc = result.accounting
    assert acc.published == 400
    assert result.unacked == 0
    assert (acc.lost, acc.doubled, acc.bracelets_short) == (1, 0, 1)
    assert acc.stored == 399
    assert not result.held
    assert result.latency_p99_ms > 0
    text = soak.report(result)
    assert "NOT EXACT: 1 lost" in text
    assert "RATE NOT HELD" in text


def test_accounting_counts_doubles_and_repeats() -> None:
    from locator.bench.soak import account

    assert account([2, 2, 2], [2, 2, 2]).exact
    doubled = account([2, 2, 2], [2, 3, 2])
    assert (doubled.lost, doubled.doubled, doubled.bracelets_over) == (0, 1, 1)
    assert not account([2, 2], [2, 2], duplicates=1).exact


def test_an_unknown_backend_is_one_config_error() -> None:
    from locator.bench import soak

    with pytest.raises(ConfigError, match="--redis must be one of cluster, single"):
        soak.run(bracelets=1, interval_s=1.0, duration_s=1.0, backend="sentinel")
