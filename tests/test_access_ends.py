"""A volunteer's access to an elder ends with its reason: the incident closes, the pair ends.

Through the real API with real volunteer tokens; incidents opened the way ingest opens them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from alerts.incidents import storage
from locator.app import create_app
from locator.core.clock import ManualClock
from locator.core.settings import load_settings
from tests.alerts_harness import District, build_district, config, consume, exit_event
from tests.browser import LiveServer
from tests.conftest import Api


@pytest.fixture
def client(alerts_client: redis.Redis) -> redis.Redis:
    return alerts_client


def _open(client: redis.Redis, d: District, clock: ManualClock) -> int:
    exit_event(client, d.elder_id, clock)
    assert consume(client, config(clock)) == 1
    incident_id = storage.open_incident_id(client, d.elder_id)
    assert incident_id is not None
    return incident_id


async def _close(api: Api, incident_id: int) -> None:
    r = await api.http.post(
        f"/api/v1/incidents/{incident_id}/resolve",
        json={"outcome": "found_safe"},
        headers=api.auth("dispatcher"),
    )
    assert r.status_code == 200, r.text


def _elder_reads(d: District) -> list[str]:
    e = d.elder_id
    return [
        f"/api/v1/elders/{e}",
        f"/api/v1/elders/{e}/position",
        f"/api/v1/elders/{e}/track",
        f"/api/v1/elders/{e}/events",
        f"/api/v1/elders/{e}/photo",
        f"/api/v1/elders/{e}/zones",
    ]


async def _statuses(api: Api, d: District, who: str) -> dict[str, int]:
    return {
        url: (await api.http.get(url, headers=d.auth(who))).status_code for url in _elder_reads(d)
    }


def _has_coordinates(value: Any) -> bool:
    if isinstance(value, dict):
        return any(k in ("lat", "lon") or _has_coordinates(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_coordinates(v) for v in value)
    return False


async def test_a_closed_incident_shows_its_outcome_to_its_volunteer_but_no_position(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    incident_id = _open(client, d, clock)
    url = f"/api/v1/incidents/{incident_id}"
    running = (await api.http.get(url, headers=d.auth("near200"))).json()
    assert running["origin"] is not None and _has_coordinates(running["timeline"])
    area = f"{url}/search-area"
    assert (await api.http.get(area, headers=d.auth("near200"))).status_code == 200
    await _close(api, incident_id)
    for who in ("near200", "pair1"):  # sent to it, paired or not
        after = await api.http.get(url, headers=d.auth(who))
        assert after.status_code == 200, after.text
        body = after.json()
        assert (body["status"], body["outcome"]) == ("resolved", "found_safe")
        assert body["origin"] is None and not _has_coordinates(body), body
        assert "resolved" in [e["type"] for e in body["timeline"]]
        listed = await api.http.get("/api/v1/incidents?status=all", headers=d.auth(who))
        assert not _has_coordinates(listed.json()), listed.text
        assert (await api.http.get(area, headers=d.auth(who))).status_code == 403
    # Dispatch and the family still see where it happened.
    staff = (await api.http.get(url, headers=api.auth("dispatcher"))).json()
    assert staff["origin"] is not None and _has_coordinates(staff["timeline"])
    assert (await api.http.get(area, headers=api.auth("guardian_a"))).status_code == 200


async def test_closing_ends_a_sent_volunteers_elder_reads(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    incident_id = _open(client, d, clock)
    assert 403 not in (await _statuses(api, d, "near200")).values()
    await _close(api, incident_id)
    assert set((await _statuses(api, d, "near200")).values()) == {403}


async def test_unpairing_ends_a_volunteers_elder_reads_at_once(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    await _close(api, _open(client, d, clock))
    # Paired and once sent: she keeps reading her elder between incidents.
    assert 403 not in (await _statuses(api, d, "pair1")).values()
    pair_url = f"/api/v1/elders/{d.elder_id}/pair"
    r = await api.http.put(
        pair_url, json={"volunteer_ids": [d.vid("pair2")]}, headers=api.auth("admin")
    )
    assert r.status_code == 200, r.text
    assert set((await _statuses(api, d, "pair1")).values()) == {403}
    assert 403 not in (await _statuses(api, d, "pair2")).values()


async def test_unpaired_during_an_open_incident_reads_until_it_closes(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    incident_id = _open(client, d, clock)
    r = await api.http.put(
        f"/api/v1/elders/{d.elder_id}/pair",
        json={"volunteer_ids": [d.vid("pair2")]},
        headers=api.auth("admin"),
    )
    assert r.status_code == 200, r.text
    assert 403 not in (await _statuses(api, d, "pair1")).values()  # still sent to find her
    await _close(api, incident_id)
    assert set((await _statuses(api, d, "pair1")).values()) == {403}


@pytest.fixture
def server(redis: object, redis_url: str, mqtt_url: str, tmp_path: Path) -> Iterator[str]:
    settings = load_settings(data_dir=tmp_path)
    app = create_app(settings, redis_url=redis_url, mqtt_url=mqtt_url, clock=ManualClock())
    with LiveServer(app) as live:
        yield live.url


def _replay(http: httpx.Client, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every event the whole feed holds for this caller (up to the first keepalive)."""
    ticket = http.post("/api/v1/stream/ticket", headers=headers).json()
    events: list[dict[str, Any]] = []
    with http.stream("GET", ticket["url"], headers={"Last-Event-ID": "0-0"}) as sse:
        for line in sse.iter_lines():
            if line.startswith(": keepalive"):
                break
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    return events


async def test_the_stream_stops_sending_a_closed_incidents_events_to_its_volunteers(
    api: Api, client: redis.Redis, clock: ManualClock, server: str
) -> None:
    d = await build_district(api)
    incident_id = _open(client, d, clock)
    with httpx.Client(base_url=server, timeout=15) as http:
        r = http.post(f"/api/v1/incidents/{incident_id}/ack", headers=d.auth("near200"))
        assert r.status_code == 200, r.text
        running = _replay(http, d.auth("near200"))
        assert [e["status"] for e in running] == ["open", "acknowledged"]
        await _close(api, incident_id)
        after = _replay(http, d.auth("near200"))
        assert [(e["incident_id"], e["status"]) for e in after] == [(incident_id, "resolved")]
        assert not _has_coordinates(after)
        staff = _replay(http, api.auth("dispatcher"))
        assert [e["status"] for e in staff if e.get("incident_id")] == [
            "open",
            "acknowledged",
            "resolved",
        ]
