"""`homeward bench alerts` at a small scale (the numbers are quoted from the full run)."""

from __future__ import annotations


def test_bench_alerts_pages_every_exit_at_small_scale() -> None:
    """The benchmark's own plumbing: every exit becomes one incident with three SMS."""
    from locator.bench import alerts as bench

    result = bench.run(incidents=4, background=50, rate=50.0, spacing_s=0.1)
    assert result.paged == 4
    assert result.sms_requests == 12  # two paired volunteers and a guardian each
    assert result.sms_p50_ms > 0
    assert "first SMS request at Twilio" in bench.report(result)
