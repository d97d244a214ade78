"""What the API fuzzer (tests/test_fuzz_api.py) found: each a 500 before, a plain answer now."""

from __future__ import annotations

from tests.conftest import Api
from tests.factories import elder_body


async def test_track_times_without_offset_or_before_1970_are_answered_not_500(api: Api) -> None:
    elder = await api.http.post("/api/v1/elders", json=elder_body(), headers=api.auth("admin"))
    url = f"/api/v1/elders/{elder.json()['id']}/track"
    for query in (
        "since=0001-01-01T00:00:00",  # naive against an aware default "until"
        "since=0001-01-01T00:00:00Z&until=0001-01-02T00:00:00Z",  # a negative stream id
        "since=1969-12-31T23:59:00Z",
    ):
        r = await api.http.get(f"{url}?{query}", headers=api.auth("admin"))
        assert r.status_code == 200, (query, r.text)
        assert r.json()["features"] == []


async def test_a_csv_with_a_lone_carriage_return_is_read_not_500(api: Api) -> None:
    text = 'name,home_lat,home_lon,guardian_name,guardian_phone\r\n"a\rb",30.5,120.6,x,y\rz'
    r = await api.http.post(
        "/api/v1/import/elders",
        content=text.encode(),
        headers={**api.auth("admin"), "Content-Type": "text/csv"},
    )
    assert r.status_code in (200, 422), r.text


async def test_a_team_patched_with_members_without_a_role_reads_back(api: Api) -> None:
    from tests.factories import volunteer_body

    vol = await api.http.post(
        "/api/v1/volunteers", json=volunteer_body(1), headers=api.auth("admin")
    )
    team = await api.http.post(
        "/api/v1/teams",
        json={"name": "队", "members": [{"volunteer_id": vol.json()["id"], "role": "lead"}]},
        headers=api.auth("admin"),
    )
    url = f"/api/v1/teams/{team.json()['id']}"
    patched = await api.http.patch(
        url, json={"members": [{"volunteer_id": vol.json()["id"]}]}, headers=api.auth("admin")
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["members"][0]["role"] == "member"
    assert (await api.http.get(url, headers=api.auth("admin"))).status_code == 200
    assert (await api.http.get("/api/v1/teams", headers=api.auth("admin"))).status_code == 200
