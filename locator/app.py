"""The HTTP application: routers of every domain, one error handler, metrics middleware."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from alerts import elder_access
from alerts.answer_page import router as answer_page_router
from alerts.feed import router as feed_router
from alerts.incidents.endpoints import router as incidents_router
from alerts.notify.endpoints import router as notifications_router
from alerts.responders import migrate as responders_migrate
from alerts.responders.endpoints import router as responders_router
from alerts.webhooks import router as webhooks_router
from devices.elders.endpoints import router as elders_router
from devices.elders.service import register_volunteer_check
from devices.registry.endpoints import router as devices_router
from devices.telemetry.endpoints import router as telemetry_router
from geofences.zones.endpoints import router as zones_router
from locator import endpoints, export, ops, watchdog
from locator.body_limit import BodyLimit
from locator.core import shards
from locator.core.auth import migrate_tokens
from locator.core.clock import Clock, SystemClock
from locator.core.deps import AppContext
from locator.core.errors import HomewardError
from locator.core.logging import get_logger
from locator.core.mqtt import MqttPublisher
from locator.core.redis import async_client, check_layout, sync_client
from locator.core.settings import Settings
from locator.web import link_sessions, pages
from locator.web.security import SecurityHeaders

log = get_logger(__name__)

API_PREFIX = ops.API_PREFIX


async def _homeward_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HomewardError)
    if exc.status_code >= 500:
        log.error("request_failed", path=request.url.path, detail=str(exc.detail))
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    headers = {**(headers or {}), **getattr(exc, "headers", {})} or None
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 naming each field; the rejected input is not echoed (it may be NaN or private)."""
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"loc": list(err["loc"]), "msg": str(err["msg"]), "type": str(err["type"])}
        for err in exc.errors()
    ]
    return JSONResponse({"detail": detail}, status_code=422)


async def _watch(client: Any, clock: Clock) -> None:
    """Every few seconds: is the alerting machinery alive? A change goes on the live feed."""
    while True:
        try:
            await anyio.to_thread.run_sync(lambda: watchdog.watch_once(client, now=clock.time()))
        except Exception as exc:  # Redis down: /healthz says so; keep watching
            log.warning("watchdog_failed", error=str(exc))
        await asyncio.sleep(WATCH_EVERY_S)


WATCH_EVERY_S = 5.0


def create_app(
    settings: Settings,
    *,
    redis_url: str | None,
    mqtt_url: str | None,
    clock: Clock | None = None,
    local_loops: tuple[str, ...] = (),
) -> FastAPI:
    """Build the app; Redis is connected in the lifespan so the app can be built anywhere."""
    shards.configure(settings.shards)
    register_volunteer_check(elder_access.CHECK)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = async_client(redis_url, process="api", cluster=settings.redis_cluster)
        sync_redis = sync_client(redis_url, process="api", cluster=settings.redis_cluster)
        check_layout(sync_redis)
        responders_migrate.to_tags(sync_redis)
        publisher = (
            MqttPublisher(mqtt_url, client_id=f"homeward-api-{socket.gethostname()}-{os.getpid()}")
            if mqtt_url
            else None
        )
        app.state.ctx = AppContext(
            settings=settings,
            redis=redis,
            clock=clock or SystemClock(),
            mqtt_url=mqtt_url,
            publisher=publisher,
            local_loops=local_loops,
            sync_redis=sync_redis,
        )
        await migrate_tokens(redis, now=app.state.ctx.clock.time(), ttl_s=settings.token_ttl_s)
        watcher = asyncio.create_task(_watch(sync_redis, app.state.ctx.clock))
        try:
            yield
        finally:
            watcher.cancel()
            if publisher is not None:
                publisher.close()
            await redis.aclose()
            sync_redis.close()

    app = FastAPI(
        title="Homeward",
        summary="Elderly wandering alert and locator: 3 minutes to respond, 10 minutes on site.",
        version="0.1.0",
        lifespan=lifespan,
        # /docs is our own page on vendored Swagger UI (pages.router): FastAPI's loads a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.add_exception_handler(HomewardError, _homeward_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.middleware("http")(ops.account_request)
    app.add_middleware(SecurityHeaders, map_tiles=settings.map_tiles)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)  # outermost: first
    app.include_router(ops.router)
    app.include_router(webhooks_router)
    app.include_router(answer_page_router)
    app.include_router(pages.router)
    app.include_router(pages.api, prefix=API_PREFIX)
    app.state.link_guard = link_sessions.still_responding  # SMS-link sessions (deps)
    app.mount("/static", StaticFiles(directory=pages.STATIC), name="static")
    for router in (
        elders_router,
        devices_router,
        telemetry_router,
        zones_router,
        responders_router,
        incidents_router,
        notifications_router,
        feed_router,
        endpoints.router,
        export.router,
    ):
        app.include_router(router, prefix=API_PREFIX)
    return app
