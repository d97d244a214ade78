"""Registry CRUD and validation through the real HTTP app on a real Redis."""

from __future__ import annotations

from typing import Any

import pytest

from alerts import keys as alerts_keys
from devices import keys as devices_keys
from geofences import keys as geofences_keys
from locator.core.auth import Role
from locator.core.crs import haversine_m
from tests.conftest import Api, both_backends
from tests.factories import HAINING, elder_body, volunteer_body

# Registration and the registry's reads once more on the local 3-master Redis Cluster.
pytestmark = both_backends


def field_of(response: Any) -> list[Any]:
    """The loc of the first validation error, without the leading "body"."""
    detail = response.json()["detail"]
    assert isinstance(detail, list), detail
    return list(detail[0]["loc"][1:])


async def create_elder(api: Api, who: str = "guardian_a", **extra: Any) -> dict[str, Any]:
    response = await api.http.post(
        "/api/v1/elders", json=elder_body(**extra), headers=api.auth(who)
    )
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_guardian_registers_reads_updates_and_lists_own_elder(api: Api) -> None:
    elder = await create_elder(api)
    assert elder["owner"] == "fam-a"
    assert elder["home"] == HAINING
    assert elder["guardians"][0]["phone"] == "+8613800138000"

    got = await api.http.get(f"/api/v1/elders/{elder['id']}", headers=api.auth("guardian_a"))
    assert got.json()["name"] == "张阿婆"

    patched = await api.http.patch(
        f"/api/v1/elders/{elder['id']}",
        json={"address": "新地址", "guardians": [{"name": "王红", "phone": "+86 139 0000 0001"}]},
        headers=api.auth("guardian_a"),
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["address"] == "新地址"
    assert patched.json()["guardians"] == [
        {"name": "王红", "phone": "+8613900000001", "relation": ""}
    ]
    assert patched.json()["name"] == "张阿婆"

    await create_elder(api, who="guardian_b", name="别家老人")
    mine = await api.http.get("/api/v1/elders", headers=api.auth("guardian_a"))
    assert [e["name"] for e in mine.json()["items"]] == ["张阿婆"]
    everyone = await api.http.get("/api/v1/elders", headers=api.auth("dispatcher"))
    assert len(everyone.json()["items"]) == 2


async def test_guardian_cannot_touch_another_familys_elder(api: Api) -> None:
    elder = await create_elder(api, who="guardian_b")
    url = f"/api/v1/elders/{elder['id']}"
    assert (await api.http.get(url, headers=api.auth("guardian_a"))).status_code == 403
    patch = await api.http.patch(url, json={"name": "x"}, headers=api.auth("guardian_a"))
    assert patch.status_code == 403
    assert (await api.http.delete(url, headers=api.auth("guardian_a"))).status_code == 403
    device = {"device_id": "bracelet-9", "elder_id": elder["id"]}
    steal = await api.http.post("/api/v1/devices", json=device, headers=api.auth("guardian_a"))
    assert steal.status_code == 403
    pair = await api.http.get(f"{url}/pair", headers=api.auth("guardian_a"))
    assert pair.status_code == 403
    assert (await api.http.get(url, headers=api.auth("guardian_b"))).json()["name"] == "张阿婆"


async def test_guardian_cannot_register_an_elder_for_someone_else(api: Api) -> None:
    response = await api.http.post(
        "/api/v1/elders", json=elder_body(owner="fam-b"), headers=api.auth("guardian_a")
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("patch", "loc"),
    [
        ({"home": {"lat": 91, "lon": 120}}, ["home", "lat"]),
        ({"home": {"lat": 30, "lon": 181}}, ["home", "lon"]),
        ({"guardians": [{"name": "李明", "phone": "13800138000"}]}, ["guardians", 0, "phone"]),
        ({"guardians": [{"name": "李明", "phone": "+861234"}]}, ["guardians", 0, "phone"]),
        ({"guardians": []}, ["guardians"]),
        ({"name": ""}, ["name"]),
        ({"photo_url": "not a url"}, ["photo_url"]),
        ({"shoe_size": 42}, ["shoe_size"]),
        ({"crs": "mercator"}, ["crs"]),
    ],
)
async def test_bad_elder_bodies_get_422_naming_the_field(
    api: Api, patch: dict[str, Any], loc: list[Any]
) -> None:
    response = await api.http.post(
        "/api/v1/elders", json=elder_body(**patch), headers=api.auth("admin")
    )
    assert response.status_code == 422
    assert field_of(response) == loc


async def test_nan_coordinates_are_rejected(api: Api) -> None:
    body = '{"name":"x","home":{"lat":NaN,"lon":120},"guardians":[{"name":"a","phone":"+8613800138000"}]}'
    response = await api.http.post(
        "/api/v1/elders",
        content=body,
        headers={**api.auth("admin"), "Content-Type": "application/json"},
    )
    assert response.status_code == 422


async def test_home_drawn_on_amap_is_stored_in_wgs84(api: Api) -> None:
    from locator.core.crs import wgs84_to_gcj02

    gcj_lat, gcj_lon = wgs84_to_gcj02(HAINING["lat"], HAINING["lon"])
    assert haversine_m(gcj_lat, gcj_lon, HAINING["lat"], HAINING["lon"]) > 300
    elder = await create_elder(api, home={"lat": gcj_lat, "lon": gcj_lon}, crs="gcj02")
    assert haversine_m(elder["home"]["lat"], elder["home"]["lon"], **_latlon(HAINING)) < 0.5


def _latlon(point: dict[str, float]) -> dict[str, float]:
    return {"lat2": point["lat"], "lon2": point["lon"]}


async def test_patch_cannot_remove_required_fields(api: Api) -> None:
    elder = await create_elder(api)
    response = await api.http.patch(
        f"/api/v1/elders/{elder['id']}", json={"name": None}, headers=api.auth("admin")
    )
    assert response.status_code == 422
    assert field_of(response) == ["name"]


async def test_unknown_ids_are_404(api: Api) -> None:
    for path in (
        "/api/v1/elders/999",
        "/api/v1/devices/nope",
        "/api/v1/volunteers/999",
        "/api/v1/teams/999",
    ):
        response = await api.http.get(path, headers=api.auth("admin"))
        assert response.status_code == 404, path
        assert "not found" in response.json()["detail"]


async def test_requests_without_a_valid_token_are_401(api: Api) -> None:
    assert (await api.http.get("/api/v1/elders")).status_code == 401
    bad = {"Authorization": "Bearer hw_not-a-token"}
    assert (await api.http.get("/api/v1/elders", headers=bad)).status_code == 401


async def test_elder_list_pages_with_a_cursor(api: Api) -> None:
    for n in range(5):
        await create_elder(api, who="admin", name=f"老人{n}")
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (
            await api.http.get("/api/v1/elders", params=params, headers=api.auth("admin"))
        ).json()
        seen += [e["name"] for e in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == [f"老人{n}" for n in range(5)]


# --- devices ----------------------------------------------------------------------------
async def test_device_registration_rules(api: Api) -> None:
    elder = await create_elder(api)
    other = await create_elder(api, name="李阿公")
    body = {"device_id": "bracelet-1", "elder_id": elder["id"]}
    created = await api.http.post("/api/v1/devices", json=body, headers=api.auth("dispatcher"))
    assert created.status_code == 201, created.text
    assert created.json() | {"created_at": None} == {
        "device_id": "bracelet-1",
        "elder_id": elder["id"],
        "protocol": "native",
        "external_id": None,
        "offline_after_s": None,
        "report_interval_s": None,
        "created_at": None,
        "last_seen": None,
        "battery": None,
        "online": False,
        "gateway": None,  # a TCP bracelet's connection; a native one has none
    }
    twice = await api.http.post(
        "/api/v1/devices", json={**body, "elder_id": other["id"]}, headers=api.auth("dispatcher")
    )
    assert twice.status_code == 409
    second = await api.http.post(
        "/api/v1/devices",
        json={"device_id": "bracelet-2", "elder_id": elder["id"]},
        headers=api.auth("dispatcher"),
    )
    assert second.status_code == 409
    assert "already wears device bracelet-1" in second.json()["detail"]
    shown = (
        await api.http.get(f"/api/v1/elders/{elder['id']}", headers=api.auth("guardian_a"))
    ).json()
    assert shown["device_id"] == "bracelet-1"

    await api.redis.hset(
        devices_keys.device_state(elder["id"], "bracelet-1"),
        mapping={"last_seen_ms": "1795392000000", "battery": "76", "online": "1"},
    )
    got = (await api.http.get("/api/v1/devices/bracelet-1", headers=api.auth("guardian_a"))).json()
    assert (got["last_seen"], got["battery"], got["online"]) == ("2026-11-23T00:00:00Z", 76, True)

    gone = await api.http.delete("/api/v1/devices/bracelet-1", headers=api.auth("guardian_a"))
    assert gone.status_code == 204
    assert (
        await api.http.get("/api/v1/devices/bracelet-1", headers=api.auth("admin"))
    ).status_code == 404
    again = await api.http.post(
        "/api/v1/devices",
        json={"device_id": "bracelet-2", "elder_id": elder["id"]},
        headers=api.auth("dispatcher"),
    )
    assert again.status_code == 201


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"device_id": "a/b"}, ["device_id"]),
        ({"device_id": "a+b"}, ["device_id"]),
        ({"protocol": "tk103"}, ["protocol"]),
        ({"protocol": "gt06"}, ["protocol"]),  # "dev-1" is no 15-digit IMEI
        ({"protocol": "jt808", "device_id": "12345"}, ["protocol"]),
        ({"protocol": "owntracks"}, ["external_id"]),
        ({"protocol": "owntracks", "external_id": "onlyuser"}, ["external_id"]),
        ({"elder_id": 0}, ["elder_id"]),
    ],
)
async def test_bad_device_bodies_get_422(
    api: Api, body: dict[str, Any], expected: list[str]
) -> None:
    elder = await create_elder(api)
    full = {"device_id": "dev-1", "elder_id": elder["id"], **body}
    response = await api.http.post("/api/v1/devices", json=full, headers=api.auth("admin"))
    assert response.status_code == 422
    assert field_of(response) == expected


async def test_owntracks_external_ids_are_unique(api: Api) -> None:
    first, second = await create_elder(api), await create_elder(api, name="李阿公")
    body = {"protocol": "owntracks", "external_id": "li/phone"}
    ok = await api.http.post(
        "/api/v1/devices",
        json={"device_id": "ot-1", "elder_id": first["id"], **body},
        headers=api.auth("admin"),
    )
    assert ok.status_code == 201
    clash = await api.http.post(
        "/api/v1/devices",
        json={"device_id": "ot-2", "elder_id": second["id"], **body},
        headers=api.auth("admin"),
    )
    assert clash.status_code == 409


async def test_device_list_is_scoped_to_the_guardian(api: Api) -> None:
    mine = await create_elder(api)
    theirs = await create_elder(api, who="guardian_b")
    for device_id, elder in (("d-mine", mine), ("d-theirs", theirs)):
        await api.http.post(
            "/api/v1/devices",
            json={"device_id": device_id, "elder_id": elder["id"]},
            headers=api.auth("admin"),
        )
    listed = (await api.http.get("/api/v1/devices", headers=api.auth("guardian_a"))).json()
    assert [d["device_id"] for d in listed["items"]] == ["d-mine"]
    everything = (await api.http.get("/api/v1/devices", headers=api.auth("admin"))).json()
    assert [d["device_id"] for d in everything["items"]] == ["d-mine", "d-theirs"]


# --- deleting an elder --------------------------------------------------------------------
async def test_deleting_an_elder_removes_binding_zones_pair_and_record(api: Api) -> None:
    elder = await create_elder(api)
    eid = elder["id"]
    await api.http.post(
        "/api/v1/devices", json={"device_id": "b-1", "elder_id": eid}, headers=api.auth("admin")
    )
    volunteer = (
        await api.http.post("/api/v1/volunteers", json=volunteer_body(1), headers=api.auth("admin"))
    ).json()
    await api.http.put(
        f"/api/v1/elders/{eid}/pair",
        json={"volunteer_ids": [volunteer["id"]]},
        headers=api.auth("admin"),
    )
    await api.redis.set(geofences_keys.zones(eid), "{}")

    response = await api.http.delete(f"/api/v1/elders/{eid}", headers=api.auth("guardian_a"))
    assert response.status_code == 204
    assert (
        await api.http.get(f"/api/v1/elders/{eid}", headers=api.auth("admin"))
    ).status_code == 404
    assert (await api.http.get("/api/v1/devices/b-1", headers=api.auth("admin"))).status_code == 404
    assert not await api.redis.exists(
        geofences_keys.zones(eid), alerts_keys.pair(eid), devices_keys.elder_device(eid)
    )
    assert not await api.redis.sismember(alerts_keys.volunteer_pairs(volunteer["id"]), str(eid))
    # Erased, not tombstoned: her record (name, phones, notes) is gone, not kept for history.
    assert not await api.redis.exists(devices_keys.elder(eid))
    # The indexes (other slots than hers) followed her record out.
    assert await api.redis.zscore(devices_keys.ELDERS, str(eid)) is None
    assert await api.redis.zscore(devices_keys.owner_elders("fam-a"), str(eid)) is None
    assert await api.redis.zscore(devices_keys.DEVICES, "b-1") is None
    listed = (await api.http.get("/api/v1/elders", headers=api.auth("guardian_a"))).json()
    assert listed["items"] == []
    # The device id is free again for a new bracelet.
    new = await create_elder(api)
    reuse = await api.http.post(
        "/api/v1/devices",
        json={"device_id": "b-1", "elder_id": new["id"]},
        headers=api.auth("admin"),
    )
    assert reuse.status_code == 201


async def test_a_registration_cut_after_her_binding_completes_when_run_again(api: Api) -> None:
    """The crash story of the ordered steps: her binding (step 1) written, nothing else."""
    eid = (await create_elder(api))["id"]
    await api.redis.set(devices_keys.elder_device(eid), "b-9")
    assert (await api.http.get("/api/v1/devices/b-9", headers=api.auth("admin"))).status_code == 404
    other = {"device_id": "b-8", "elder_id": eid}
    refused = await api.http.post("/api/v1/devices", json=other, headers=api.auth("admin"))
    assert refused.status_code == 409 and "b-9" in refused.text
    again = {"device_id": "b-9", "elder_id": eid}
    made = await api.http.post("/api/v1/devices", json=again, headers=api.auth("admin"))
    assert made.status_code == 201, made.text
    listed = (await api.http.get("/api/v1/devices", headers=api.auth("admin"))).json()
    assert [d["device_id"] for d in listed["items"]] == ["b-9"]
    # Cut again, then her deletion: the binding with no record goes with her.
    eid2 = (await create_elder(api))["id"]
    await api.redis.set(devices_keys.elder_device(eid2), "b-7")
    gone = await api.http.delete(f"/api/v1/elders/{eid2}", headers=api.auth("admin"))
    assert gone.status_code == 204
    assert not await api.redis.exists(devices_keys.elder_device(eid2))


# --- volunteers, pairs, teams, dispatchers --------------------------------------------------
async def test_volunteer_phone_is_unique_and_normalised(api: Api) -> None:
    first = await api.http.post(
        "/api/v1/volunteers",
        json=volunteer_body(1, phone="+86 139 0000 0001"),
        headers=api.auth("admin"),
    )
    assert first.status_code == 201
    assert first.json()["phone"] == "+8613900000001"
    clash = await api.http.post(
        "/api/v1/volunteers",
        json=volunteer_body(2, phone="+8613900000001"),
        headers=api.auth("admin"),
    )
    assert clash.status_code == 409
    second = (
        await api.http.post("/api/v1/volunteers", json=volunteer_body(2), headers=api.auth("admin"))
    ).json()
    steal = await api.http.patch(
        f"/api/v1/volunteers/{second['id']}",
        json={"phone": "+8613900000001"},
        headers=api.auth("admin"),
    )
    assert steal.status_code == 409
    moved = await api.http.patch(
        f"/api/v1/volunteers/{first.json()['id']}",
        json={"phone": "+8613900009999"},
        headers=api.auth("admin"),
    )
    assert moved.status_code == 200
    # The old number is free once its owner moved away from it.
    reuse = await api.http.patch(
        f"/api/v1/volunteers/{second['id']}",
        json={"phone": "+8613900000001"},
        headers=api.auth("admin"),
    )
    assert reuse.status_code == 200


async def test_volunteer_manages_only_their_own_duty_quiet_hours_and_location(api: Api) -> None:
    me = (
        await api.http.post("/api/v1/volunteers", json=volunteer_body(1), headers=api.auth("admin"))
    ).json()
    other = (
        await api.http.post("/api/v1/volunteers", json=volunteer_body(2), headers=api.auth("admin"))
    ).json()
    api.tokens["me"] = await api.token(Role.VOLUNTEER, str(me["id"]))
    url = f"/api/v1/volunteers/{me['id']}"
    assert (await api.http.get(url, headers=api.auth("me"))).status_code == 200
    duty = await api.http.patch(
        url,
        json={"on_duty": False, "quiet_hours": {"start": "22:00", "end": "07:00"}},
        headers=api.auth("me"),
    )
    assert duty.status_code == 200
    assert duty.json()["quiet_hours"] == {"start": "22:00", "end": "07:00"}
    assert (
        await api.http.patch(url, json={"phone": "+8613900000077"}, headers=api.auth("me"))
    ).status_code == 403
    bad_hours = await api.http.patch(
        url, json={"quiet_hours": {"start": "25:00", "end": "07:00"}}, headers=api.auth("me")
    )
    assert bad_hours.status_code == 422
    assert field_of(bad_hours) == ["quiet_hours", "start"]
    shared = await api.http.post(
        f"{url}/location", json={"lat": 30.51, "lon": 120.68, "acc": 12}, headers=api.auth("me")
    )
    assert shared.status_code == 200
    assert (await api.http.get(url, headers=api.auth("me"))).json()["location"]["acc"] == 12
    near = await api.redis.geosearch(
        alerts_keys.VOLUNTEER_GEO, longitude=120.68, latitude=30.51, radius=50, unit="m"
    )
    assert near == [str(me["id"])]
    other_url = f"/api/v1/volunteers/{other['id']}"
    assert (await api.http.get(other_url, headers=api.auth("me"))).status_code == 403
    assert (
        await api.http.post(
            f"{other_url}/location", json={"lat": 1, "lon": 1}, headers=api.auth("me")
        )
    ).status_code == 403
    assert (await api.http.get("/api/v1/volunteers", headers=api.auth("me"))).status_code == 403


async def test_pairs_hold_one_or_two_distinct_existing_volunteers(api: Api) -> None:
    elder = await create_elder(api)
    ids = [
        (
            await api.http.post(
                "/api/v1/volunteers", json=volunteer_body(n), headers=api.auth("admin")
            )
        ).json()["id"]
        for n in range(1, 4)
    ]
    url = f"/api/v1/elders/{elder['id']}/pair"
    for bad, loc in (
        ([], ["volunteer_ids"]),
        (ids, ["volunteer_ids"]),
        ([ids[0], ids[0]], ["volunteer_ids"]),
        ([ids[0], 999], ["volunteer_ids", 1]),
    ):
        response = await api.http.put(
            url, json={"volunteer_ids": bad}, headers=api.auth("dispatcher")
        )
        assert response.status_code == 422, bad
        assert field_of(response) == loc
    ok = await api.http.put(url, json={"volunteer_ids": ids[:2]}, headers=api.auth("dispatcher"))
    assert ok.status_code == 200
    assert ok.json()["volunteer_ids"] == ids[:2]
    family_view = (await api.http.get(url, headers=api.auth("guardian_a"))).json()
    assert family_view["volunteer_ids"] is None
    assert family_view["volunteers"] == [
        {"id": None, "name": "志愿者1", "phone": None},
        {"id": None, "name": "志愿者2", "phone": None},
    ]
    assert (
        await api.http.put(url, json={"volunteer_ids": ids[:1]}, headers=api.auth("guardian_a"))
    ).status_code == 403
    repaired = await api.http.put(url, json={"volunteer_ids": [ids[2]]}, headers=api.auth("admin"))
    assert repaired.json()["volunteer_ids"] == [ids[2]]
    assert not await api.redis.sismember(alerts_keys.volunteer_pairs(ids[0]), str(elder["id"]))


async def test_teams_are_made_of_existing_volunteers(api: Api) -> None:
    lead = (
        await api.http.post("/api/v1/volunteers", json=volunteer_body(1), headers=api.auth("admin"))
    ).json()
    member = (
        await api.http.post("/api/v1/volunteers", json=volunteer_body(2), headers=api.auth("admin"))
    ).json()
    body = {
        "name": "西山救援队",
        "members": [{"volunteer_id": lead["id"], "role": "lead"}, {"volunteer_id": 999}],
    }
    missing = await api.http.post("/api/v1/teams", json=body, headers=api.auth("dispatcher"))
    assert missing.status_code == 422
    assert field_of(missing) == ["members", 1]
    body["members"][1] = {"volunteer_id": member["id"]}
    team = await api.http.post("/api/v1/teams", json=body, headers=api.auth("dispatcher"))
    assert team.status_code == 201, team.text
    assert [(m["name"], m["role"]) for m in team.json()["members"]] == [
        ("志愿者1", "lead"),
        ("志愿者2", "member"),
    ]
    twice = await api.http.patch(
        f"/api/v1/teams/{team.json()['id']}",
        json={"members": [{"volunteer_id": lead["id"]}, {"volunteer_id": lead["id"]}]},
        headers=api.auth("dispatcher"),
    )
    assert twice.status_code == 422
    off = await api.http.patch(
        f"/api/v1/teams/{team.json()['id']}",
        json={"on_duty": False},
        headers=api.auth("dispatcher"),
    )
    assert off.json()["on_duty"] is False
    assert (
        len((await api.http.get("/api/v1/teams", headers=api.auth("admin"))).json()["items"]) == 1
    )


async def test_dispatcher_roster(api: Api) -> None:
    body = {"name": "值班员甲", "phone": "+8657387000001", "on_call": True}
    created = await api.http.post("/api/v1/dispatchers", json=body, headers=api.auth("admin"))
    assert created.status_code == 201, created.text
    assert (
        await api.http.post("/api/v1/dispatchers", json=body, headers=api.auth("admin"))
    ).status_code == 409
    off = await api.http.patch(
        f"/api/v1/dispatchers/{created.json()['id']}",
        json={"on_call": False},
        headers=api.auth("dispatcher"),
    )
    assert off.json()["on_call"] is False
    roster = (await api.http.get("/api/v1/dispatchers", headers=api.auth("dispatcher"))).json()
    assert [d["name"] for d in roster["items"]] == ["值班员甲"]


async def test_token_minting_through_the_api(api: Api) -> None:
    minted = await api.http.post(
        "/api/v1/tokens", json={"role": "guardian"}, headers=api.auth("dispatcher")
    )
    assert minted.status_code == 201
    family = {"Authorization": f"Bearer {minted.json()['token']}"}
    elder = await api.http.post("/api/v1/elders", json=elder_body(), headers=family)
    assert elder.json()["owner"] == minted.json()["subject"]
    staff = await api.http.post(
        "/api/v1/tokens", json={"role": "admin"}, headers=api.auth("dispatcher")
    )
    assert staff.status_code == 403
    ghost = await api.http.post(
        "/api/v1/tokens", json={"role": "volunteer", "subject": "42"}, headers=api.auth("admin")
    )
    assert ghost.status_code == 422
    # Only the hash is stored.
    token = minted.json()["token"]
    async for key in api.redis.scan_iter(match="hw:*"):
        assert token not in key
        if await api.redis.type(key) == "hash":
            assert token not in str(await api.redis.hgetall(key))
    revoked = await api.http.post(
        "/api/v1/tokens/revoke", json={"token": token}, headers=api.auth("admin")
    )
    assert revoked.status_code == 204
    assert (await api.http.get("/api/v1/elders", headers=family)).status_code == 401


async def _send_to_open_incident(api: Api, elder_id: int, volunteer_id: int) -> None:
    """What the alerts commit writes when it sends a volunteer an elder's open incident."""
    await api.redis.set(alerts_keys.open_incident(elder_id), "77")
    await api.redis.hset(alerts_keys.incident_responders(elder_id, 77), str(volunteer_id), "{}")
    await api.redis.sadd(alerts_keys.elder_readers(elder_id), str(volunteer_id))


async def test_a_volunteer_reads_only_elders_of_incidents_they_were_sent(api: Api) -> None:
    elder = await create_elder(api)
    me = (
        await api.http.post("/api/v1/volunteers", json=volunteer_body(1), headers=api.auth("admin"))
    ).json()
    api.tokens["me"] = await api.token(Role.VOLUNTEER, str(me["id"]))
    url = f"/api/v1/elders/{elder['id']}"
    assert (await api.http.get(url, headers=api.auth("me"))).status_code == 403
    # Dispatch (alerts) records who was sent her open incident; that is what opens the elder.
    await _send_to_open_incident(api, elder["id"], me["id"])
    assert (await api.http.get(url, headers=api.auth("me"))).json()["name"] == "张阿婆"
    assert (
        await api.http.patch(url, json={"name": "x"}, headers=api.auth("me"))
    ).status_code == 403


async def test_optional_text_set_to_null_is_cleared_not_broken(api: Api) -> None:
    elder = await create_elder(api)
    url = f"/api/v1/elders/{elder['id']}"
    cleared = await api.http.patch(
        url, json={"address": None, "medical_notes": None}, headers=api.auth("guardian_a")
    )
    assert cleared.status_code == 200, cleared.text
    assert (cleared.json()["address"], cleared.json()["medical_notes"]) == ("", "")
    assert (await api.http.get("/api/v1/elders", headers=api.auth("admin"))).status_code == 200


async def test_an_elder_without_a_device_shows_none_and_leaks_nothing(api: Api) -> None:
    mine = await create_elder(api)
    listed = (await api.http.get("/api/v1/elders", headers=api.auth("guardian_a"))).json()
    assert listed["items"][0]["device_id"] is None
    # Another family registers a device literally called "None": it must stay theirs.
    theirs = await create_elder(api, who="guardian_b")
    await api.http.post(
        "/api/v1/devices",
        json={"device_id": "None", "elder_id": theirs["id"]},
        headers=api.auth("dispatcher"),
    )
    devices = (await api.http.get("/api/v1/devices", headers=api.auth("guardian_a"))).json()
    assert devices["items"] == []
    assert mine["id"] != theirs["id"]


async def test_volunteer_location_outside_geo_range_is_422(api: Api) -> None:
    me = (
        await api.http.post("/api/v1/volunteers", json=volunteer_body(1), headers=api.auth("admin"))
    ).json()
    response = await api.http.post(
        f"/api/v1/volunteers/{me['id']}/location",
        json={"lat": 89.0, "lon": 1.0},
        headers=api.auth("admin"),
    )
    assert response.status_code == 422
    assert field_of(response) == ["lat"]


async def test_a_bad_cursor_names_the_query_parameter(api: Api) -> None:
    response = await api.http.get(
        "/api/v1/elders", params={"cursor": "abc"}, headers=api.auth("admin")
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "cursor"]


async def test_concurrent_delete_and_register_never_leave_a_device_on_a_tombstone(api: Api) -> None:
    import asyncio

    for round_ in range(15):
        elder = await create_elder(api)
        body = {"device_id": f"race-{round_}", "elder_id": elder["id"]}
        await asyncio.gather(
            api.http.delete(f"/api/v1/elders/{elder['id']}", headers=api.auth("admin")),
            api.http.post("/api/v1/devices", json=body, headers=api.auth("admin")),
        )
        device = await api.redis.get(devices_keys.device(body["device_id"]))
        if device is not None:
            # The registration won the race: then the delete must have removed it.
            raise AssertionError(f"device {body['device_id']} survived its elder's deletion")


async def test_concurrent_patch_cannot_resurrect_a_deleted_elder(api: Api) -> None:
    import asyncio

    for _ in range(15):
        elder = await create_elder(api)
        url = f"/api/v1/elders/{elder['id']}"
        await asyncio.gather(
            api.http.patch(url, json={"description": "x"}, headers=api.auth("admin")),
            api.http.delete(url, headers=api.auth("admin")),
        )
        assert (await api.http.get(url, headers=api.auth("admin"))).status_code == 404


def tiny_png() -> bytes:
    """A real 1×1 PNG."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xcc\x88\x44")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


async def test_a_photo_upload_is_served_to_those_who_may_read_her(api: Api) -> None:
    elder = await create_elder(api)
    url = f"/api/v1/elders/{elder['id']}/photo"
    png = tiny_png()
    up = await api.http.put(
        url, content=png, headers={**api.auth("guardian_a"), "Content-Type": "image/png"}
    )
    assert up.status_code == 200, up.text
    photo_url = up.json()["photo_url"]
    assert photo_url.startswith(url + "?v=")
    got = await api.http.get(photo_url, headers=api.auth("guardian_a"))
    assert got.status_code == 200 and got.content == png
    assert got.headers["content-type"] == "image/png"
    assert (await api.http.get(url, headers=api.auth("guardian_b"))).status_code == 403
    assert (
        await api.http.put(
            url, content=png, headers={**api.auth("guardian_b"), "Content-Type": "image/png"}
        )
    ).status_code == 403
    # A volunteer sees her face once sent to one of her incidents.
    me = (
        await api.http.post("/api/v1/volunteers", json=volunteer_body(1), headers=api.auth("admin"))
    ).json()
    api.tokens["me"] = await api.token(Role.VOLUNTEER, str(me["id"]))
    assert (await api.http.get(url, headers=api.auth("me"))).status_code == 403
    await _send_to_open_incident(api, elder["id"], me["id"])
    assert (await api.http.get(url, headers=api.auth("me"))).content == png
    # Refused with the reason, the old photo kept.
    for content, kind, reason in (
        (b"hello", "text/plain", "JPEG, PNG or WebP"),
        (png, "image/jpeg", "not a image/jpeg image"),
        (b"", "image/png", "empty"),
    ):
        bad = await api.http.put(
            url, content=content, headers={**api.auth("guardian_a"), "Content-Type": kind}
        )
        assert bad.status_code == 422 and field_of(bad) == ["photo"], bad.text
        assert reason in bad.text
    # Over 1 MB: the server-wide body limit (the same size by default) answers first.
    huge = b"\x89PNG\r\n\x1a\n" + b"\0" * (2 * 1024 * 1024)
    too_big = await api.http.put(
        url, content=huge, headers={**api.auth("guardian_a"), "Content-Type": "image/png"}
    )
    assert too_big.status_code == 413, too_big.text
    assert (await api.http.get(url, headers=api.auth("guardian_a"))).content == png
    # A volunteer cannot upload, and is refused before the body is read.
    assert (
        await api.http.put(
            url, content=png, headers={**api.auth("me"), "Content-Type": "image/png"}
        )
    ).status_code == 403
    # Pointing photo_url elsewhere drops the uploaded picture.
    elder_url = f"/api/v1/elders/{elder['id']}"
    moved = await api.http.patch(
        elder_url, json={"photo_url": "https://example.org/new.jpg"}, headers=api.auth("guardian_a")
    )
    assert moved.status_code == 200
    assert (await api.http.get(url, headers=api.auth("guardian_a"))).status_code == 404
    # Deleting the elder deletes the face too.
    await api.http.put(
        url, content=png, headers={**api.auth("guardian_a"), "Content-Type": "image/png"}
    )
    assert await api.redis.exists(devices_keys.elder_photo(elder["id"]))
    gone = await api.http.delete(f"/api/v1/elders/{elder['id']}", headers=api.auth("guardian_a"))
    assert gone.status_code == 204
    assert not await api.redis.exists(devices_keys.elder_photo(elder["id"]))
