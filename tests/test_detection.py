"""A short detection replay in the suite, with the benchmark's own assertions at small scale."""

from __future__ import annotations

import pytest

from locator.bench import detection
from locator.mosquitto import mosquitto_binary


@pytest.mark.skipif(mosquitto_binary() is None, reason="the replay drives a real Mosquitto")
def test_a_small_replay_has_no_false_alarm_no_miss_and_adaptive_reporting_helps() -> None:
    slow = detection.run_config(interval_s=180, adaptive=False, elders=4, seed=3)
    fast = detection.run_config(interval_s=180, adaptive=True, elders=4, seed=3)
    for result in (slow, fast):
        assert result.false_alarms == 0
        assert result.misses == 0
        assert len(result.latencies) == 2  # half of the elders wandered
    assert slow.commands == 0 and fast.commands > 0
    assert max(fast.latencies) < max(slow.latencies)


@pytest.mark.skipif(mosquitto_binary() is None, reason="the replay drives a real Mosquitto")
def test_a_slow_bracelet_still_confirms_within_ten_minutes_with_adaptive_reporting() -> None:
    """600 s fixes: two fixes alone are ten minutes apart; follow-ups and fast mode close it."""
    result = detection.run_config(interval_s=600, adaptive=True, elders=4, seed=3)
    assert result.false_alarms == 0 and result.misses == 0
    assert len(result.latencies) == 2 and max(result.latencies) < 600
    assert result.commands > 0
