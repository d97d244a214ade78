"""Per-device MQTT credentials: the OwnTracks QR code logs a phone in to the production
broker configuration, and only onto its own topics; `homeward mqtt-credentials` makes the
password-file lines the mosquitto-auth service installs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from devices.registry import mqtt_credentials
from locator.app import create_app
from locator.core.auth import Role, create_token
from locator.core.clock import ManualClock
from locator.core.deps import AppContext
from locator.core.settings import load_settings
from tests.factories import elder_body
from tests.test_compose import SECRETS, _Client, _make_passwd, _mosquitto, needs_mosquitto

SECRET = SECRETS["HOMEWARD_MQTT_DEVICE_SECRET"]


@pytest.fixture
async def site(
    redis: aioredis.Redis, redis_url: str, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """The real app with HOMEWARD_MQTT_DEVICE_SECRET set; (client, headers per role)."""
    settings = load_settings(data_dir=tmp_path, mqtt_device_secret=SECRET)
    clock = ManualClock()
    app = create_app(settings, redis_url=redis_url, mqtt_url=None, clock=clock)
    app.state.ctx = AppContext(settings=settings, redis=redis, clock=clock)
    headers = {}
    for who, role, subject in [("admin", Role.ADMIN, None), ("guardian", Role.GUARDIAN, "f1")]:
        token, _ = await create_token(redis, role=role, subject=subject, created_at=clock.time())
        headers[who] = f"Bearer {token}"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://homeward.test") as http:
        yield http, headers


async def _phone_config(
    http: httpx.AsyncClient, headers: dict[str, str], device_id: str, external_id: str
) -> dict[str, object]:
    guardian = {"Authorization": headers["guardian"]}
    elder = await http.post("/api/v1/elders", json=elder_body(), headers=guardian)
    assert elder.status_code == 201, elder.text
    body = {
        "device_id": device_id,
        "elder_id": elder.json()["id"],
        "protocol": "owntracks",
        "external_id": external_id,
    }
    made = await http.post(
        "/api/v1/devices", json=body, headers={"Authorization": headers["admin"]}
    )
    assert made.status_code == 201, made.text
    setup = await http.get(f"/api/v1/devices/{device_id}/owntracks", headers=guardian)
    assert setup.status_code == 200, setup.text
    config: dict[str, object] = setup.json()["config"]
    return config


def _cli(*args: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEWARD_")}
    env["HOMEWARD_MQTT_DEVICE_SECRET"] = SECRET
    result = subprocess.run(
        [sys.executable, "-m", "locator", "mqtt-credentials", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.splitlines()


def test_passwd_lines_are_mosquittos_format_and_per_kind() -> None:
    line = mqtt_credentials.passwd_line(username="860001", password="pw", salt=b"\0" * 12)
    user, _, hashed = line.partition(":")
    assert user == "860001" and hashed.startswith("$7$101$AAAAAAAAAAAAAAAA$")
    native = mqtt_credentials.device_password(secret=SECRET, kind="native", username="li")
    phone = mqtt_credentials.device_password(secret=SECRET, kind="owntracks", username="li")
    other = mqtt_credentials.device_password(secret="another", kind="native", username="li")
    assert len({native, phone, other}) == 3 and len(native) == 24
    assert not mqtt_credentials.valid_username("homeward-ingest")
    assert not mqtt_credentials.valid_username("a/b")


@needs_mosquitto
@pytest.mark.timeout(120)
async def test_the_owntracks_qr_logs_the_phone_in_to_its_own_topics_only(
    site: tuple[httpx.AsyncClient, dict[str, str]], tmp_path: Path
) -> None:
    http, headers = site
    config = await _phone_config(http, headers, "phone-li", "li/pixel")
    assert config["auth"] is True and config["username"] == "li"
    # A phone registered under a bracelet's id as its user gets a QR code, but not the
    # bracelet's password.
    squatter = await _phone_config(http, headers, "phone-sq", "860001/x")
    lines = [
        *_cli("--owntracks", "li"),
        *_cli("860001"),
    ]
    (bracelet_password,) = (line.split()[1] for line in _cli("--password", "860001"))
    passwd = _make_passwd(tmp_path, lines)
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    with _mosquitto(broker_dir, passwd) as (port, _log):
        refused = _Client(port, "860001", str(squatter["password"]))
        refused.close()
        assert str(refused.reason) == "Not authorized"
        clients = []
        try:
            ingest = _Client(port, "homeward-ingest", SECRETS["HOMEWARD_MQTT_INGEST_PASSWORD"])
            phone = _Client(port, str(config["username"]), str(config["password"]))
            bracelet = _Client(port, "860001", bracelet_password)
            clients += [ingest, phone, bracelet]
            assert not any(c.reason.is_failure for c in clients), [c.reason for c in clients]
            ingest.subscribe("owntracks/#")
            ingest.subscribe("homeward/devices/+/up")
            phone.subscribe("owntracks/+/+")  # the app's "friends": must deliver nothing
            phone.publish("homeward/devices/860001/up", b"spoofed bracelet")
            phone.publish("owntracks/860001/x", b"spoofed phone")
            phone.publish("owntracks/li/pixel", b"mine")
            assert ingest.messages.get(timeout=5) == ("owntracks/li/pixel", b"mine")
            bracelet.publish("homeward/devices/860001/up", b"bracelet")
            assert ingest.messages.get(timeout=5) == ("homeward/devices/860001/up", b"bracelet")
            assert ingest.messages.empty()
            # Its own fix comes back to the phone; nobody else's does.
            assert phone.messages.get(timeout=5) == ("owntracks/li/pixel", b"mine")
            assert phone.messages.empty()
        finally:
            for client in clients:
                client.close()
