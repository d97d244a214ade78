"""Tokens expire, are listed without secrets and revoked by id; sessions die with them, and
an SMS link's session ends when the alert no longer needs that volunteer."""

from __future__ import annotations

from typing import Any

import redis

from alerts import links
from locator.core import keys
from locator.core.auth import SESSION_COOKIE, Role, hash_token, migrate_tokens
from locator.core.clock import ManualClock
from tests.alerts_harness import build_district
from tests.conftest import Api, both_backends
from tests.test_incidents import open_by_exit

CSRF = {"X-Homeward": "1"}


async def mint(api: Api, **body: Any) -> dict[str, Any]:
    response = await api.http.post("/api/v1/tokens", json=body, headers=api.auth("admin"))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login(api: Api, token: str) -> str:
    """A browser session opened with ``token``: the cookie's value."""
    response = await api.http.post("/api/v1/session", json={"token": token})
    assert response.status_code == 200, response.text
    session = response.cookies[SESSION_COOKIE]
    api.http.cookies.clear()
    return session


async def as_session(api: Api, session: str, url: str = "/api/v1/session") -> int:
    api.http.cookies.set(SESSION_COOKIE, session)
    try:
        return (await api.http.get(url)).status_code
    finally:
        api.http.cookies.clear()


@both_backends
async def test_a_token_expires_and_its_session_with_it(api: Api, clock: ManualClock) -> None:
    created = await mint(api, role="guardian", subject="fam-x", ttl_s=600)
    assert set(created) == {"id", "token", "role", "subject", "expires_at"}
    assert created["expires_at"] == "2026-11-23T08:10:00Z"
    token = created["token"]
    session = await login(api, token)
    assert (await api.http.get("/api/v1/elders", headers=bearer(token))).status_code == 200
    assert await as_session(api, session) == 200

    clock.advance(600)
    expired = await api.http.get("/api/v1/elders", headers=bearer(token))
    assert expired.status_code == 401
    assert "expired" in expired.json()["detail"]
    assert await as_session(api, session) == 401
    relogin = await api.http.post("/api/v1/session", json={"token": token})
    assert relogin.status_code == 401


@both_backends
async def test_the_default_lifetime_is_the_setting(api: Api, clock: ManualClock) -> None:
    created = await mint(api, role="dispatcher")
    assert created["expires_at"] == "2027-02-21T08:00:00Z"  # 90 days
    # Redis forgets a dead token by itself too.
    ttl = await api.redis.ttl(keys.token(hash_token(created["token"])))
    assert 7_776_000 - 60 < ttl <= 7_776_000
    too_short = await api.http.post(
        "/api/v1/tokens", json={"role": "guardian", "ttl_s": 5}, headers=api.auth("admin")
    )
    assert too_short.status_code == 422
    assert too_short.json()["detail"][0]["loc"] == ["body", "ttl_s"]
    # A dispatcher onboards families, but not with tokens outliving the setting.
    longer = await api.http.post(
        "/api/v1/tokens",
        json={"role": "guardian", "ttl_s": 7_776_001},
        headers=api.auth("dispatcher"),
    )
    assert longer.status_code == 403


@both_backends
async def test_the_list_shows_who_holds_what_but_no_secret(api: Api) -> None:
    created = [await mint(api, role="guardian", subject=f"fam-{n}") for n in range(3)]
    listed = await api.http.get("/api/v1/tokens", headers=api.auth("admin"))
    assert listed.status_code == 200
    page = listed.json()
    assert page["next"] is None
    items = {i["id"]: i for i in page["items"]}
    for c in created:
        assert items[c["id"]] == {
            "id": c["id"],
            "role": "guardian",
            "subject": c["subject"],
            "created_at": "2026-11-23T08:00:00Z",
            "expires_at": c["expires_at"],
        }
        assert c["token"] not in listed.text
    assert {"admin", "dispatcher"} <= {i["role"] for i in page["items"]}
    for token in api.tokens.values():
        assert token not in listed.text
    first = await api.http.get("/api/v1/tokens?limit=2", headers=api.auth("admin"))
    rest = await api.http.get(
        f"/api/v1/tokens?cursor={first.json()['next']}", headers=api.auth("admin")
    )
    ids = [i["id"] for i in first.json()["items"] + rest.json()["items"]]
    assert ids == sorted(items)
    for who in ("dispatcher", "guardian_a"):
        assert (await api.http.get("/api/v1/tokens", headers=api.auth(who))).status_code == 403


@both_backends
async def test_revoking_by_id_ends_the_token_and_its_browser_sessions_at_once(api: Api) -> None:
    created = await mint(api, role="dispatcher")
    token = created["token"]
    session = await login(api, token)
    assert await as_session(api, session, "/api/v1/elders") == 200
    refused = await api.http.delete(
        f"/api/v1/tokens/{created['id']}", headers=api.auth("dispatcher")
    )
    assert refused.status_code == 403

    gone = await api.http.delete(f"/api/v1/tokens/{created['id']}", headers=api.auth("admin"))
    assert gone.status_code == 204
    assert (await api.http.get("/api/v1/elders", headers=bearer(token))).status_code == 401
    assert not await api.redis.exists(keys.session(hash_token(session)))
    assert await as_session(api, session, "/api/v1/elders") == 401
    listed = (await api.http.get("/api/v1/tokens", headers=api.auth("admin"))).json()
    assert created["id"] not in {i["id"] for i in listed["items"]}
    again = await api.http.delete(f"/api/v1/tokens/{created['id']}", headers=api.auth("admin"))
    assert again.status_code == 404
    # Revoking by the secret (a lost phone's token) still works and ends sessions too.
    other = (await mint(api, role="guardian"))["token"]
    other_session = await login(api, other)
    revoked = await api.http.post(
        "/api/v1/tokens/revoke", json={"token": other}, headers=api.auth("admin")
    )
    assert revoked.status_code == 204
    assert not await api.redis.exists(keys.session(hash_token(other_session)))


@both_backends
async def test_tokens_from_before_expiry_get_an_id_and_a_full_lifetime(
    api: Api, clock: ManualClock
) -> None:
    legacy = "hw_legacy-token-from-an-old-store"
    digest = hash_token(legacy)
    await api.redis.hset(
        keys.token(digest), mapping={"role": "guardian", "subject": "fam-old", "created_at": "0"}
    )
    await api.redis.zadd(keys.TOKENS, {digest: 0})
    assert await migrate_tokens(api.redis, now=clock.time(), ttl_s=3600) == 1
    assert await migrate_tokens(api.redis, now=clock.time(), ttl_s=3600) == 0
    listed = (await api.http.get("/api/v1/tokens", headers=api.auth("admin"))).json()
    old = next(i for i in listed["items"] if i["subject"] == "fam-old")
    assert old["expires_at"] == "2026-11-23T09:00:00Z"
    assert (await api.http.get("/api/v1/elders", headers=bearer(legacy))).status_code == 200
    clock.advance(3600)
    assert (await api.http.get("/api/v1/elders", headers=bearer(legacy))).status_code == 401
    assert not await api.redis.exists(keys.TOKENS)


# --- sessions opened by an SMS link -----------------------------------------------------
async def link_session(
    api: Api, client: redis.Redis, clock: ManualClock, incident_id: int, vid: int
) -> str:
    token = links.sign(
        links.secret(client),
        incident_id=incident_id,
        volunteer_id=vid,
        expires=clock.time() + links.LINK_TTL_S,
    )
    page = await api.http.get(f"/v/{incident_id}", params={"t": token})
    assert page.status_code == 200, page.text
    session = page.cookies[SESSION_COOKIE]
    api.http.cookies.clear()
    assert await as_session(api, session, f"/api/v1/incidents/{incident_id}") == 200
    return session


async def test_a_link_session_ends_when_its_volunteer_is_stood_down(
    api: Api, alerts_client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    incident_id = open_by_exit(alerts_client, d, clock)
    session = await link_session(api, alerts_client, clock, incident_id, d.vid("pair1"))
    # The link's session lives what is left of the link, not a fresh 6 hours.
    ttl = await api.redis.ttl(keys.session(hash_token(session)))
    assert 0 < ttl <= links.LINK_TTL_S
    url = f"/api/v1/incidents/{incident_id}"
    assert (await api.http.post(f"{url}/ack", headers=d.auth("near200"))).status_code == 200
    # pair1 is told "covered, stand by": the page the link opened no longer reads anything.
    assert await as_session(api, session, url) == 401
    assert not await api.redis.exists(keys.session(hash_token(session)))
    # Opening the same link again gives no new session either.
    token = links.sign(
        links.secret(alerts_client),
        incident_id=incident_id,
        volunteer_id=d.vid("pair1"),
        expires=clock.time() + 60,
    )
    again = await api.http.get(f"/v/{incident_id}", params={"t": token})
    assert SESSION_COOKIE not in again.cookies
    # The volunteer who went keeps theirs.
    mine = await link_session(api, alerts_client, clock, incident_id, d.vid("near200"))
    assert await as_session(api, mine, url) == 200


async def test_a_link_session_ends_when_the_incident_closes(
    api: Api, alerts_client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    incident_id = open_by_exit(alerts_client, d, clock)
    session = await link_session(api, alerts_client, clock, incident_id, d.vid("pair2"))
    url = f"/api/v1/incidents/{incident_id}"
    resolved = await api.http.post(
        f"{url}/resolve", json={"outcome": "found_safe"}, headers=api.auth("dispatcher")
    )
    assert resolved.status_code == 200, resolved.text
    assert await as_session(api, session, "/api/v1/session") == 401
    # A page route treats it as logged out too.
    api.http.cookies.set(SESSION_COOKIE, session)
    page = await api.http.get("/v")
    api.http.cookies.clear()
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/v"
    # A volunteer's own login (a token) is not tied to any incident.
    assert (await api.http.get("/api/v1/session", headers=d.auth("pair2"))).status_code == 200


@both_backends
async def test_the_cli_and_api_tokens_share_one_expiry(api: Api, clock: ManualClock) -> None:
    token = await api.token(Role.GUARDIAN, "fam-z")
    assert (await api.http.get("/api/v1/elders", headers=bearer(token))).status_code == 200
    clock.advance(7_776_000)
    assert (await api.http.get("/api/v1/elders", headers=bearer(token))).status_code == 401


@both_backends
async def test_an_index_entry_left_without_its_token_is_not_listed_and_is_dropped(
    api: Api,
) -> None:
    """The crash story of minting: the id index (step 1) written, the record (step 2) not."""
    await api.redis.zadd(keys.TOKEN_IDS, {"f" * 64: 999})
    listed = await api.http.get("/api/v1/tokens", headers=api.auth("admin"))
    assert listed.status_code == 200
    assert 999 not in [t["id"] for t in listed.json()["items"]]
    assert await api.redis.zscore(keys.TOKEN_IDS, "f" * 64) is None
