"""Health and metrics against real Redis and a real broker."""

from __future__ import annotations

from pathlib import Path

import httpx

from locator.app import create_app
from locator.core.clock import ManualClock
from locator.core.deps import AppContext
from locator.core.redis import async_client
from locator.core.settings import load_settings
from locator.embedded import free_port
from locator.ops import probe_mqtt
from tests.conftest import Api


async def test_healthz_is_ok_when_redis_and_broker_answer(api: Api) -> None:
    response = await api.http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "redis": "ok",
        "mqtt": "ok",
        "alerting": "ok",
        "redis_memory": "ok",
    }


async def test_healthz_names_what_is_down(redis_url: str, tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    dead_mqtt = f"mqtt://127.0.0.1:{free_port()}"
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app(settings, redis_url=dead_redis, mqtt_url=dead_mqtt)
    redis = async_client(dead_redis, process="test")
    app.state.ctx = AppContext(
        settings=settings, redis=redis, clock=ManualClock(), mqtt_url=dead_mqtt
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        response = await http.get("/healthz")
    await redis.aclose()
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["redis"].startswith("down:")
    assert body["mqtt"].startswith("down:")


async def test_probe_speaks_mqtt_to_the_real_broker(mqtt_url: str) -> None:
    await probe_mqtt(mqtt_url)


async def test_metrics_are_prometheus_text_for_staff_only(api: Api) -> None:
    await api.http.get("/api/v1/elders", headers=api.auth("admin"))
    response = await api.http.get("/metrics", headers=api.auth("dispatcher"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert (
        'homeward_http_requests_total{method="GET",route="/api/v1/elders",status="200"}'
        in response.text
    )
    assert (await api.http.get("/metrics", headers=api.auth("guardian_a"))).status_code == 403
    assert (await api.http.get("/metrics")).status_code == 401


async def test_openapi_documents_the_registry(api: Api) -> None:
    spec = (await api.http.get("/openapi.json")).json()
    for path in (
        "/api/v1/elders",
        "/api/v1/elders/{elder_id}",
        "/api/v1/devices",
        "/api/v1/elders/{elder_id}/pair",
        "/api/v1/volunteers/{volunteer_id}/location",
        "/api/v1/teams",
        "/api/v1/dispatchers",
        "/healthz",
    ):
        assert path in spec["paths"], path
