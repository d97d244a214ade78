"""Bodies over HOMEWARD_MAX_BODY_BYTES get 413 before they are read whole, on a real server.

Raw sockets: a client that lies about its length or streams chunks without one is exactly
what the limit is for, and an HTTP library would not send either.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from devices import keys as devices_keys
from locator.app import create_app
from locator.core.clock import ManualClock
from locator.core.settings import load_settings
from tests.browser import LiveServer
from tests.conftest import Api
from tests.factories import elder_body

LIMIT = 4096


@pytest.fixture
def server(redis: aioredis.Redis, redis_url: str, mqtt_url: str, tmp_path: Path) -> Iterator[int]:
    settings = load_settings(data_dir=tmp_path, max_body_bytes=LIMIT)
    app = create_app(settings, redis_url=redis_url, mqtt_url=mqtt_url, clock=ManualClock())
    with LiveServer(app) as live:
        yield live.port


def _exchange(port: int, head: str, body: bytes = b"") -> tuple[int, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
            if b"\r\n\r\n" in reply:
                header, _, rest = reply.partition(b"\r\n\r\n")
                length = [
                    int(line.split(b":")[1])
                    for line in header.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if length and len(rest) >= length[0]:
                    break
    status = int(reply.split(b" ", 2)[1])
    return status, reply.partition(b"\r\n\r\n")[2].decode()


def _head(path: str, token: str, *extra: str) -> str:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {token}",
        "Content-Type: application/json",
        *extra,
    ]
    return "\r\n".join(lines) + "\r\n"


def _padded_elder(size: int) -> bytes:
    """A valid elder body (whitespace is legal JSON) of at least ``size`` bytes."""
    raw = json.dumps(elder_body()).encode()
    return raw[:-1] + b" " * max(0, size - len(raw)) + b"}"


async def test_a_declared_length_over_the_limit_is_refused_before_any_byte_is_read(
    api: Api, server: int
) -> None:
    # Ten gigabytes announced, none sent: the answer comes at once, not after a timeout.
    head = _head("/api/v1/elders", api.tokens["admin"], "Content-Length: 10000000000")
    status, detail = _exchange(server, head)
    assert status == 413 and str(LIMIT) in detail
    assert await api.redis.zcard(devices_keys.ELDERS) == 0


async def test_a_chunked_body_is_cut_off_once_past_the_limit_and_the_route_never_runs(
    api: Api, server: int
) -> None:
    body = _padded_elder(3 * LIMIT)
    chunks = b"".join(
        f"{len(body[i : i + 1024]):x}\r\n".encode() + body[i : i + 1024] + b"\r\n"
        for i in range(0, len(body), 1024)
    )
    head = _head("/api/v1/elders", api.tokens["admin"], "Transfer-Encoding: chunked")
    status, detail = _exchange(server, head, chunks + b"0\r\n\r\n")
    assert status == 413 and str(LIMIT) in detail, detail
    assert await api.redis.zcard(devices_keys.ELDERS) == 0  # the elder was never created
    # The same body under the limit goes through: the limit, not the shape, refused it.
    small = _padded_elder(LIMIT - 100)
    head = _head("/api/v1/elders", api.tokens["admin"], f"Content-Length: {len(small)}")
    status, _ = _exchange(server, head, small)
    assert status == 201
    assert await api.redis.zcard(devices_keys.ELDERS) == 1


async def test_the_photo_keeps_its_own_cap_below_a_larger_body_limit(
    api: Api, redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    settings = load_settings(data_dir=tmp_path, max_body_bytes=4 * 1024 * 1024)
    app = create_app(settings, redis_url=redis_url, mqtt_url=mqtt_url, clock=ManualClock())
    elder = await api.http.post("/api/v1/elders", json=elder_body(), headers=api.auth("admin"))
    photo = b"\x89PNG\r\n\x1a\n" + b"\0" * (2 * 1024 * 1024)
    with LiveServer(app) as live:
        head = (
            f"PUT /api/v1/elders/{elder.json()['id']}/photo HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {api.tokens['admin']}\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(photo)}\r\n"
        )
        status, detail = _exchange(live.port, head, photo)
    assert status == 422 and "at most 1 MB" in detail
