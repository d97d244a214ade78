"""`homeward bench soak` at a tiny scale (the province run is quoted in docs/BENCHMARKS.md)."""

from __future__ import annotations

import pytest
import redis

from devices import keys
from locator.core.errors import ConfigError


def test_a_tiny_soak_stores_every_fix_and_its_accounting_sees_one_dropped() -> None:
    """Real broker, two real ingest processes, one Redis; one stored fix deleted before
    counting must show as exactly one lost fix (the rest exact), and the rate as not held."""
    from locator.bench import soak

    def drop_one(client: redis.Redis) -> None:
        track = keys.track(1, soak.device_name(0))
        first = client.xrange(track, count=1)
        assert first, "bracelet 0 stored nothing"
        client.xdel(track, first[0][0])

    result = soak.run(bracelets=200, interval_s=5.0, duration_s=10.0, tamper=drop_one)
    acc = result.accounting
    assert acc.published == 400
    assert result.unacked == 0
    assert (acc.lost, acc.doubled, acc.bracelets_short) == (1, 0, 1)
    assert acc.stored == 399
    assert not result.held
    assert result.latency_p99_ms > 0
    assert set(result.rss) == {"ingest-0", "ingest-1", "redis", "broker"}
    text = soak.report(result)
    assert "NOT EXACT: 1 lost" in text
    assert "RATE NOT HELD" in text


def test_accounting_counts_doubles_and_repeats() -> None:
    from locator.bench.soak import account

    assert account([2, 2, 2], [2, 2, 2]).exact
    doubled = account([2, 2, 2], [2, 3, 2])
    assert (doubled.lost, doubled.doubled, doubled.bracelets_over) == (0, 1, 1)
    assert not account([2, 2], [2, 2], duplicates=1).exact


def test_the_cluster_backend_is_a_clear_hook_until_it_exists() -> None:
    from locator.bench import soak

    with pytest.raises(ConfigError, match="not built yet"):
        soak.run(bracelets=1, interval_s=1.0, duration_s=1.0, backend="cluster")
