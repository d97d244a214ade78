"""The roles table of the brief, for the registry resources: each role × resource × read/write."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from locator.core.auth import Role
from tests.conftest import Api
from tests.factories import elder_body, volunteer_body

ROLES = ("admin", "dispatcher", "guardian_own", "guardian_other", "volunteer")
_unique = itertools.count(100)


@dataclass
class World:
    api: Api
    elder_id: int
    other_volunteer_id: int
    headers: dict[str, dict[str, str]]


Call = Callable[[World, dict[str, str]], Awaitable[httpx.Response]]


async def _new_elder_device(w: World, h: dict[str, str]) -> httpx.Response:
    # A fresh elder per call keeps "one device per elder" from answering 409 instead.
    elder = await w.api.http.post(
        "/api/v1/elders", json=elder_body(), headers=w.api.auth("guardian_a")
    )
    device_id = f"dev-{next(_unique)}"
    # From stock, with the code on its box: a family binds nothing without it.
    stocked = await w.api.http.post(
        "/api/v1/devices/stock", json={"device_id": device_id}, headers=w.api.auth("admin")
    )
    code = stocked.json()["claim_code"]
    body = {"device_id": device_id, "elder_id": elder.json()["id"], "claim_code": code}
    return await w.api.http.post("/api/v1/devices", json=body, headers=h)


async def _pair(w: World, h: dict[str, str]) -> httpx.Response:
    body = {"volunteer_ids": [w.other_volunteer_id]}
    return await w.api.http.put(f"/api/v1/elders/{w.elder_id}/pair", json=body, headers=h)


CALLS: dict[tuple[str, str], Call] = {
    ("elders", "read"): lambda w, h: w.api.http.get(f"/api/v1/elders/{w.elder_id}", headers=h),
    ("elders", "write"): lambda w, h: w.api.http.patch(
        f"/api/v1/elders/{w.elder_id}", json={"description": "红色外套"}, headers=h
    ),
    ("devices", "read"): lambda w, h: w.api.http.get("/api/v1/devices/dev-own", headers=h),
    ("devices", "write"): _new_elder_device,
    ("volunteers", "read"): lambda w, h: w.api.http.get(
        f"/api/v1/volunteers/{w.other_volunteer_id}", headers=h
    ),
    ("volunteers", "write"): lambda w, h: w.api.http.post(
        "/api/v1/volunteers", json=volunteer_body(next(_unique)), headers=h
    ),
    ("teams", "read"): lambda w, h: w.api.http.get("/api/v1/teams", headers=h),
    ("teams", "write"): lambda w, h: w.api.http.post(
        "/api/v1/teams",
        json={"name": "队", "members": [{"volunteer_id": w.other_volunteer_id}]},
        headers=h,
    ),
    ("pairs", "read"): lambda w, h: w.api.http.get(f"/api/v1/elders/{w.elder_id}/pair", headers=h),
    ("pairs", "write"): _pair,
    ("dispatchers", "read"): lambda w, h: w.api.http.get("/api/v1/dispatchers", headers=h),
    ("dispatchers", "write"): lambda w, h: w.api.http.post(
        "/api/v1/dispatchers",
        json={"name": "值班", "phone": f"+86573870{next(_unique):05d}"},
        headers=h,
    ),
}

STAFF_ONLY = {"admin", "dispatcher"}
FAMILY = {"admin", "dispatcher", "guardian_own"}
ALLOWED: dict[tuple[str, str], set[str]] = {
    ("elders", "read"): FAMILY,
    ("elders", "write"): FAMILY,
    ("devices", "read"): FAMILY,
    ("devices", "write"): FAMILY,
    ("volunteers", "read"): STAFF_ONLY,
    ("volunteers", "write"): STAFF_ONLY,
    ("teams", "read"): STAFF_ONLY,
    ("teams", "write"): STAFF_ONLY,
    ("pairs", "read"): FAMILY,  # a guardian sees names only (checked in test_registry)
    ("pairs", "write"): STAFF_ONLY,
    ("dispatchers", "read"): STAFF_ONLY,
    ("dispatchers", "write"): STAFF_ONLY,
}


@pytest.fixture
async def world(api: Api) -> World:
    elder = (
        await api.http.post("/api/v1/elders", json=elder_body(), headers=api.auth("guardian_a"))
    ).json()
    await api.http.post(
        "/api/v1/devices",
        json={"device_id": "dev-own", "elder_id": elder["id"]},
        headers=api.auth("admin"),
    )
    me = (
        await api.http.post("/api/v1/volunteers", json=volunteer_body(1), headers=api.auth("admin"))
    ).json()
    other = (
        await api.http.post("/api/v1/volunteers", json=volunteer_body(2), headers=api.auth("admin"))
    ).json()
    volunteer_token = await api.token(Role.VOLUNTEER, str(me["id"]))
    headers = {
        "admin": api.auth("admin"),
        "dispatcher": api.auth("dispatcher"),
        "guardian_own": api.auth("guardian_a"),
        "guardian_other": api.auth("guardian_b"),
        "volunteer": {"Authorization": f"Bearer {volunteer_token}"},
    }
    return World(api=api, elder_id=elder["id"], other_volunteer_id=other["id"], headers=headers)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("resource", "action"), list(CALLS))
async def test_roles_table(world: World, resource: str, action: str, role: str) -> None:
    response = await CALLS[(resource, action)](world, world.headers[role])
    if role in ALLOWED[(resource, action)]:
        assert response.status_code in (200, 201), (role, resource, action, response.text)
    else:
        assert response.status_code == 403, (role, resource, action, response.text)


async def test_guardian_lists_only_own_and_volunteer_lists_nothing(world: World) -> None:
    api = world.api
    await api.http.post(
        "/api/v1/elders", json=elder_body(name="别家"), headers=api.auth("guardian_b")
    )
    own: Any = (await api.http.get("/api/v1/elders", headers=world.headers["guardian_own"])).json()
    assert [e["id"] for e in own["items"]] == [world.elder_id]
    assert (
        await api.http.get("/api/v1/elders", headers=world.headers["volunteer"])
    ).status_code == 403
