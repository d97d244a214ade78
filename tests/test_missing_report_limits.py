"""The manual missing report pages real people: a sane place, and a guardian's rate limit."""

from __future__ import annotations

import pytest
import redis

from alerts import keys as alerts_keys
from alerts.incidents.reporting import REPORTS_PER_WINDOW, WINDOW_S
from locator.core.clock import ManualClock
from tests.alerts_harness import build_district, north
from tests.conftest import Api


@pytest.fixture
def client(alerts_client: redis.Redis) -> redis.Redis:
    return alerts_client


async def test_a_last_seen_place_far_from_home_is_refused_naming_the_field(
    api: Api, client: redis.Redis
) -> None:
    d = await build_district(api)
    far = {"elder_id": d.elder_id, "last_seen_at": north(25_000)}
    bad = await api.http.post("/api/v1/incidents", json=far, headers=api.auth("guardian_a"))
    assert bad.status_code == 422, bad.text
    assert bad.json()["detail"][0]["loc"] == ["body", "last_seen_at"]
    assert client.zcard(alerts_keys.INCIDENTS) == 0  # nobody paged near a place she never was
    near = {"elder_id": d.elder_id, "last_seen_at": north(19_000)}
    ok = await api.http.post("/api/v1/incidents", json=near, headers=api.auth("guardian_a"))
    assert ok.status_code == 201, ok.text


async def test_a_guardians_missing_reports_are_rate_limited_before_any_work(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    report = {"elder_id": d.elder_id, "note": "没回家"}
    for _ in range(REPORTS_PER_WINDOW):
        r = await api.http.post("/api/v1/incidents", json=report, headers=api.auth("guardian_a"))
        assert r.status_code == 201, r.text
        clock.advance(60)
    version = client.hget(alerts_keys.incident(d.elder_id, r.json()["id"]), "version")
    limited = await api.http.post("/api/v1/incidents", json=report, headers=api.auth("guardian_a"))
    assert limited.status_code == 429, limited.text
    # The first report leaves the window an hour after it was made.
    assert int(limited.headers["Retry-After"]) == WINDOW_S - REPORTS_PER_WINDOW * 60 + 1
    assert client.hget(alerts_keys.incident(d.elder_id, r.json()["id"]), "version") == version
    # Another family, and dispatch, are not held back by it.
    other = await api.http.post(
        "/api/v1/incidents", json={"elder_id": d.elder_id}, headers=api.auth("guardian_b")
    )
    assert other.status_code == 403  # not hers: refused for that, not for the rate
    staff = await api.http.post("/api/v1/incidents", json=report, headers=api.auth("dispatcher"))
    assert staff.status_code == 201
    clock.advance(WINDOW_S - REPORTS_PER_WINDOW * 60 + 1)
    again = await api.http.post("/api/v1/incidents", json=report, headers=api.auth("guardian_a"))
    assert again.status_code == 201, again.text
