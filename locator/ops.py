"""Operations: health of Redis and the broker, Prometheus metrics, request accounting."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from locator.core.auth import Role
from locator.core.deps import CallerDep, ContextDep
from locator.processes import read_heartbeat

router = APIRouter(tags=["operations"])

API_PREFIX = "/api/v1"

HTTP_REQUESTS = Counter(
    "homeward_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "homeward_http_request_seconds", "HTTP request latency", ["method", "route"]
)
HEALTH_CHECKS = Counter(
    "homeward_health_checks_total",
    "Health probes by dependency and result",
    ["dependency", "result"],
)


async def probe_mqtt(url: str, *, within_s: float = 2.0) -> None:
    """Open an MQTT 3.1.1 session and close it; raises if the broker does not accept us."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    tls = parts.scheme == "mqtts"
    port = parts.port or (8883 if tls else 1883)
    client_id = f"homeward-health-{time.monotonic_ns() % 10**9}".encode()
    flags = 0x02  # clean session: a probe must leave nothing behind on the broker
    payload = len(client_id).to_bytes(2, "big") + client_id
    if parts.username:
        flags |= 0x80
        user = unquote(parts.username).encode()
        payload += len(user).to_bytes(2, "big") + user
        if parts.password is not None:
            flags |= 0x40
            password = unquote(parts.password).encode()
            payload += len(password).to_bytes(2, "big") + password
    variable = b"\x00\x04MQTT\x04" + bytes([flags]) + (10).to_bytes(2, "big")
    body = variable + payload
    packet = b"\x10" + _remaining_length(len(body)) + body
    context = ssl.create_default_context() if tls else None
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=context), within_s
    )
    try:
        writer.write(packet)
        await writer.drain()
        connack = await asyncio.wait_for(reader.readexactly(4), within_s)
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"broker refused the connection (code {connack[3]})")
        writer.write(b"\xe0\x00")
        await writer.drain()
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)


def _remaining_length(length: int) -> bytes:
    out = bytearray()
    while True:
        digit, length = length % 128, length // 128
        out.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(out)


@router.get("/healthz")
async def healthz(ctx: ContextDep) -> JSONResponse:
    """ok when Redis answers and the MQTT broker accepts a session; 503 naming what is down."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(ctx.redis.ping(), 2.0)
        checks["redis"] = "ok"
    except Exception as exc:  # any failure means "down"; the reason goes in the answer
        checks["redis"] = f"down: {type(exc).__name__}: {exc}"
    if ctx.mqtt_url:
        try:
            await probe_mqtt(ctx.mqtt_url)
            checks["mqtt"] = "ok"
        except Exception as exc:
            checks["mqtt"] = f"down: {type(exc).__name__}: {exc}"
    else:
        checks["mqtt"] = "not configured"
    for loop in ctx.local_loops:
        heartbeat = read_heartbeat(ctx.settings.data_dir, loop)
        problem = "no heartbeat yet" if heartbeat is None else heartbeat.problem()
        checks[loop] = f"down: {problem}" if problem else "ok"
    for name, result in checks.items():
        HEALTH_CHECKS.labels(name, "ok" if result == "ok" else "down").inc()
    healthy = all(v in ("ok", "not configured") for v in checks.values())
    body: dict[str, Any] = {"status": "ok" if healthy else "degraded", **checks}
    return JSONResponse(body, status_code=200 if healthy else 503)


@router.get("/metrics", response_class=Response)
async def metrics(caller: CallerDep) -> Response:
    """Prometheus exposition (admin and dispatcher tokens)."""
    caller.require(Role.ADMIN, Role.DISPATCHER)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def account_request(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Middleware: count and time every request by its route template (bounded labels)."""
    started = time.perf_counter()
    status = 500  # what the client gets if the route raises past every handler
    try:
        response = await call_next(request)
        status = response.status_code
    finally:
        _account(request, status, time.perf_counter() - started)
    return response


def _account(request: Request, status: int, seconds: float) -> None:
    route = request.scope.get("route")
    template = getattr(route, "path", "unmatched")
    # Recent FastAPI keeps included routers un-flattened: the route knows only its own prefix.
    if request.url.path.startswith(API_PREFIX) and not template.startswith(API_PREFIX):
        template = API_PREFIX + template
    HTTP_REQUESTS.labels(request.method, template, str(status)).inc()
    HTTP_LATENCY.labels(request.method, template).observe(seconds)
