"""Her access log: who read or changed her data, through the real API; never coordinates."""

from __future__ import annotations

import json
import re

import pytest
import redis

from devices import keys as devices_keys
from devices.elders import access_log
from locator.core.auth import Principal, Role
from locator.core.clock import ManualClock
from tests.alerts_harness import LAT, LON, build_district, north
from tests.conftest import Api, both_backends
from tests.privacy_harness import bind, open_incident, walk


@pytest.fixture
def client(alerts_client: redis.Redis) -> redis.Redis:
    return alerts_client


async def _log(api: Api, elder_id: int, who: dict[str, str]) -> list[dict[str, str]]:
    r = await api.http.get(f"/api/v1/elders/{elder_id}/access-log?limit=200", headers=who)
    assert r.status_code == 200, r.text
    assert r.json()["next"] is None
    return list(r.json()["items"])


async def test_every_reader_is_logged_by_role_subject_and_action_without_coordinates(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    e = d.elder_id
    await bind(api, e)
    walk(client, clock, (0, 100, 250, 300))
    incident_id = open_incident(client, e, clock)
    reads = {
        "record.read": f"/api/v1/elders/{e}",
        "position.read": f"/api/v1/elders/{e}/position",
        "track.read": f"/api/v1/elders/{e}/track",
        "search_area.read": f"/api/v1/incidents/{incident_id}/search-area",
        "handoff.read": f"/api/v1/incidents/{incident_id}/handoff",
    }
    readers = {
        "guardian_a": api.auth("guardian_a"),
        "dispatcher": api.auth("dispatcher"),
        "near200": d.auth("near200"),
    }
    for who, headers in readers.items():
        for action, url in reads.items():
            r = await api.http.get(url, headers=headers)
            # The hand-off pack is for dispatch and the family (volunteers get 403).
            expected = 403 if (who, action) == ("near200", "handoff.read") else 200
            assert r.status_code == expected, (who, url, r.text)
    log = await _log(api, e, api.auth("guardian_a"))
    seen = {(i["role"], i["subject"], i["action"]) for i in log}
    volunteer = str(d.vid("near200"))
    for action in reads:
        assert ("guardian", "fam-a", action) in seen, action
        assert ("dispatcher", "", action) in seen, action
        if action != "handoff.read":
            assert ("volunteer", volunteer, action) in seen, action
    assert ("volunteer", volunteer, "handoff.read") not in seen  # refused reads are not reads
    # Changes are there too: her record made, her zone drawn, her pair set, her bracelet bound.
    for change in ("record.create", "zone.create", "pair.set", "device.bind"):
        assert change in {i["action"] for i in log}, change
    # Newest first, each with a time.
    assert [i["at"] for i in log] == sorted((i["at"] for i in log), reverse=True)
    # No coordinates: neither her home nor any fix of the walk, nor anything shaped like one.
    text = json.dumps(log)
    for lat, lon in [(LAT, LON), *((p["lat"], p["lon"]) for p in map(north, (100, 250, 300)))]:
        assert f"{lat:.3f}" not in text and f"{lon:.3f}" not in text
    assert not re.search(r"\d+\.\d{3,}", text), text
    raw = client.xrange(devices_keys.access_log(e))
    assert not re.search(r"\d+\.\d{3,}", json.dumps(raw))


async def test_only_her_family_and_staff_read_her_log(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    url = f"/api/v1/elders/{d.elder_id}/access-log"
    open_incident(client, d.elder_id, clock)
    # A volunteer sent to her incident reads her record, but not who else read it.
    assert (
        await api.http.get(f"/api/v1/elders/{d.elder_id}", headers=d.auth("near200"))
    ).is_success
    assert (await api.http.get(url, headers=d.auth("near200"))).status_code == 403
    assert (await api.http.get(url, headers=api.auth("guardian_b"))).status_code == 403
    for who in ("guardian_a", "dispatcher", "admin"):
        assert (await api.http.get(url, headers=api.auth(who))).status_code == 200, who


@both_backends
async def test_a_polling_page_is_one_entry_per_window_and_changes_say_which_fields(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    e, guardian = d.elder_id, api.auth("guardian_a")
    for _ in range(3):
        clock.advance(15)
        assert (await api.http.get(f"/api/v1/elders/{e}", headers=guardian)).is_success
    clock.advance(access_log.READ_COALESCE_S)
    assert (await api.http.get(f"/api/v1/elders/{e}", headers=guardian)).is_success
    r = await api.http.patch(
        f"/api/v1/elders/{e}", json={"medical_notes": "秘密病情 xyz"}, headers=guardian
    )
    assert r.status_code == 200, r.text
    log = await _log(api, e, guardian)
    assert [i["action"] for i in log].count("record.read") == 2
    change = next(i for i in log if i["action"] == "record.change")
    assert change["detail"] == "medical_notes" and "秘密" not in json.dumps(log)


async def test_entries_older_than_the_retention_are_trimmed_by_the_app_clock(
    redis: object, alerts_client: redis.Redis, clock: ManualClock
) -> None:
    staff = Principal(role=Role.DISPATCHER)
    for n in range(5):
        access_log.record_sync(
            alerts_client,
            elder_id=7,
            caller=staff,
            action="zone.delete",
            detail=f"zone z{n}",
            now=clock.time() + n * 100,
            retention_s=250,
        )
    # At +400 s, entries before +150 s are gone: z0 (+0) and z1 (+100).
    left = [f["detail"] for _, f in alerts_client.xrange(devices_keys.access_log(7))]
    assert left == ["zone z2", "zone z3", "zone z4"]
    # A clock that stands still (or an equal millisecond) still appends, in order.
    for _ in range(2):
        access_log.record_sync(
            alerts_client,
            elder_id=7,
            caller=staff,
            action="export",
            detail="",
            now=clock.time() + 400,
            retention_s=250,
        )
    assert alerts_client.xlen(devices_keys.access_log(7)) == 5


def test_a_detail_shaped_like_a_coordinate_is_never_kept(
    alerts_client: redis.Redis, clock: ManualClock
) -> None:
    access_log.record_sync(
        alerts_client,
        elder_id=8,
        caller=Principal(role=Role.ADMIN),
        action="pause.set",
        detail="near 30.51123,120.68531",
        now=clock.time(),
    )
    [(_, fields)] = alerts_client.xrange(devices_keys.access_log(8))
    assert "30.5112" not in fields["detail"] and "120.6853" not in fields["detail"]
    with pytest.raises(ValueError, match="unknown access-log action"):
        access_log.record_sync(
            alerts_client,
            elder_id=8,
            caller=Principal(role=Role.ADMIN),
            action="looked",
            detail="",
            now=clock.time(),
        )


@both_backends
async def test_the_console_map_is_a_read_of_each_position_it_shows(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    await bind(api, d.elder_id)
    walk(client, clock, (0,))
    r = await api.http.get("/api/v1/overview", headers=api.auth("dispatcher"))
    assert r.status_code == 200, r.text
    log = await _log(api, d.elder_id, api.auth("guardian_a"))
    assert {
        (i["role"], i["action"], i["detail"]) for i in log if i["action"] == "position.read"
    } == {("dispatcher", "position.read", "console map")}
