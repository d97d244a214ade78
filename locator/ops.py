"""Operations: health of Redis and the broker, Prometheus metrics, request accounting."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from locator import watchdog
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
    if checks["redis"] == "ok" and ctx.sync_redis is not None:
        client, now = ctx.sync_redis, ctx.clock.time()
        try:
            assessment = await anyio.to_thread.run_sync(
                lambda: watchdog.watch_once(client, now=now)
            )
            checks["alerting"] = (
                "ok" if not assessment.problems else ("down: " + "; ".join(assessment.problems))
            )
            checks["redis_memory"] = _memory_check(assessment.redis_memory_ratio)
        except Exception as exc:
            checks["alerting"] = f"down: {type(exc).__name__}: {exc}"
    for name, result in checks.items():
        label = "ok" if result == "ok" else ("warn" if result.startswith("warn") else "down")
        HEALTH_CHECKS.labels(name, label).inc()
    # A warning is still healthy (200): nothing is refused yet, but someone should look.
    healthy = all(v in ("ok", "not configured") or v.startswith("warn") for v in checks.values())
    warned = any(v.startswith("warn") for v in checks.values())
    status = ("warn" if warned else "ok") if healthy else "degraded"
    body: dict[str, Any] = {"status": status, **checks}
    return JSONResponse(body, status_code=200 if healthy else 503)


def _memory_check(ratio: float | None) -> str:
    """ok below 80% of maxmemory, warn up to 95%, down beyond (writes are about to fail)."""
    if ratio is None:
        return "not configured"
    if ratio >= watchdog.MEMORY_CRITICAL:
        return f"down: {watchdog.memory_text(ratio)}"
    if ratio >= watchdog.MEMORY_WARN:
        return f"warn: {watchdog.memory_text(ratio)}"
    return "ok"


INGEST_LAG = Gauge("homeward_ingest_lag_seconds", "Age of the oldest fix waiting in the ingest")
HEARTBEAT_AGE = Gauge(
    "homeward_heartbeat_age_seconds", "Seconds since a loop's last beat", ["loop"]
)
TIMERS_OVERDUE = Gauge("homeward_timers_overdue", "Due timer jobs nobody claimed for 30 s")
TIMERS_OLDEST = Gauge("homeward_timers_oldest_overdue_seconds", "How late the oldest job is")
ALARMS_WAITING = Gauge(
    "homeward_alarms_waiting", "Transitions and device events not yet handled by the alerts stage"
)
ALARMS_AGE = Gauge("homeward_alarms_oldest_seconds", "Age of the oldest alarm not yet handled")
OUTBOX_DEPTH = Gauge("homeward_outbox_depth", "Notification attempts not yet delivered")
OUTBOX_AGE = Gauge("homeward_outbox_oldest_seconds", "Age of the oldest undelivered attempt")
NOTIFICATIONS = Gauge(
    "homeward_notification_results", "Notification outcomes so far", ["channel", "status"]
)
OPEN_INCIDENTS = Gauge("homeward_open_incidents", "Open incidents by SLA state", ["sla"])
DEGRADED = Gauge("homeward_system_degraded", "1 when the alerting machinery has a problem")
REDIS_MEMORY = Gauge(
    "homeward_redis_memory_ratio", "Redis used_memory / maxmemory (0 when no maxmemory is set)"
)


class _StreamLosses(Collector):
    """Entries deleted under a pending read, as counted in Redis by every process."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def collect(self) -> Any:
        family = CounterMetricFamily(
            "homeward_stream_entries_lost",
            "Stream entries found deleted under a pending read (never handled)",
            labels=["stream", "group"],
        )
        for (stream, group), count in sorted(self.counts.items()):
            family.add_metric([stream, group], count)
        yield family


STREAM_LOSSES = _StreamLosses()
REGISTRY.register(STREAM_LOSSES)


def _export(assessment: watchdog.Assessment) -> None:
    INGEST_LAG.set(assessment.ingest_lag_s)
    for loop, age in assessment.heartbeat_age_s.items():
        HEARTBEAT_AGE.labels(loop).set(age)
    TIMERS_OVERDUE.set(assessment.timers_overdue)
    TIMERS_OLDEST.set(assessment.timers_oldest_overdue_s)
    ALARMS_WAITING.set(assessment.alarms_waiting)
    ALARMS_AGE.set(assessment.alarms_oldest_s)
    OUTBOX_DEPTH.set(assessment.outbox_depth)
    OUTBOX_AGE.set(assessment.outbox_oldest_s)
    for key, count in assessment.notifications.items():
        channel, _, status = key.partition(":")
        NOTIFICATIONS.labels(channel, status).set(count)
    for state, count in assessment.incidents_by_sla.items():
        OPEN_INCIDENTS.labels(state).set(count)
    DEGRADED.set(1 if assessment.problems else 0)
    REDIS_MEMORY.set(assessment.redis_memory_ratio or 0.0)
    STREAM_LOSSES.counts = dict(assessment.streams_lost)


@router.get("/metrics", response_class=Response)
async def metrics(caller: CallerDep, ctx: ContextDep) -> Response:
    """Prometheus exposition (admin and dispatcher tokens)."""
    caller.require(Role.ADMIN, Role.DISPATCHER)
    if ctx.sync_redis is not None:
        client, now = ctx.sync_redis, ctx.clock.time()
        _export(await anyio.to_thread.run_sync(lambda: watchdog.assess(client, now=now)))
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
