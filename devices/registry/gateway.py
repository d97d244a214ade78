"""What the TCP gateway keeps per bracelet in Redis: who holds its connection, commands
waiting for its next connection, its JT/T 808 authentication code, its last command and
answer, and its dead-lettered frames (the ingest's rejected stream).

A waiting command is a hash field per action: the same command queued by several gateway
processes is one command, and a connection takes them all at once (MULTI HGETALL + DEL).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

import redis.asyncio as aioredis

from devices import keys
from devices.ingest.store_script import DEAD_LETTER_SCRIPT
from locator.core import keys as core_keys
from locator.core import store
from locator.core.scripts import Script

PENDING_TTL_S = 600  # a command for a disconnected bracelet waits this long
DEAD_LETTER_PAYLOAD_CHARS = 512

# Only the holder may let go of a bracelet: a reconnection elsewhere must not be undone.
_RELEASE = Script(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""",
    name="gateway_release",
)


async def device(redis: aioredis.Redis, *, device_id: str) -> dict[str, Any] | None:
    """The registered device document, or None."""
    return await store.get_doc(redis, keys.device(device_id))


async def auth_code(redis: aioredis.Redis, *, device_id: str) -> str:
    """The JT/T 808 authentication code given at registration (made once, then kept)."""
    key = keys.gateway_device(device_id)
    await redis.hsetnx(key, "auth_code", secrets.token_hex(8))
    return store.text(await redis.hget(key, "auth_code")) or ""


async def hold(
    redis: aioredis.Redis, *, device_id: str, gateway: str, ttl_s: int, now: float
) -> list[dict[str, Any]]:
    """Mark this gateway as the bracelet's connection; returns the commands waiting for it."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(keys.gateway_holder(device_id), gateway, ex=ttl_s)
        pipe.hset(
            keys.gateway_device(device_id),
            mapping={"gateway": gateway, "connected_at": str(round(now, 3))},
        )
        pipe.hgetall(keys.gateway_pending(device_id))
        pipe.delete(keys.gateway_pending(device_id))
        results = await pipe.execute()
    waiting: dict[Any, Any] = results[2]
    commands = [json.loads(v) for v in waiting.values()]
    return sorted(commands, key=lambda c: float(c.get("queued_at", 0)))


async def refresh(redis: aioredis.Redis, *, device_id: str, gateway: str, ttl_s: int) -> None:
    """Keep the holder mark alive while the connection talks."""
    await redis.set(keys.gateway_holder(device_id), gateway, ex=ttl_s)


async def release(redis: aioredis.Redis, *, device_id: str, gateway: str, now: float) -> None:
    """The connection closed: drop the holder mark if it is still ours."""
    await _RELEASE.run_async(redis, keys=[keys.gateway_holder(device_id)], args=[gateway])
    await redis.hset(keys.gateway_device(device_id), "disconnected_at", str(round(now, 3)))


async def holder(redis: aioredis.Redis, *, device_id: str) -> str | None:
    """The gateway holding the bracelet's connection, if any."""
    return store.text(await redis.get(keys.gateway_holder(device_id)))


async def queue_command(
    redis: aioredis.Redis, *, device_id: str, command: dict[str, Any], now: float
) -> None:
    """Keep a command for the bracelet's next connection (one per action, 10 min)."""
    key = keys.gateway_pending(device_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(key, str(command["action"]), json.dumps({**command, "queued_at": now}))
        pipe.expire(key, PENDING_TTL_S)
        await pipe.execute()


async def take_pending(redis: aioredis.Redis, *, device_id: str) -> list[dict[str, Any]]:
    """The waiting commands, removed (each taken by one gateway only)."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hgetall(keys.gateway_pending(device_id))
        pipe.delete(keys.gateway_pending(device_id))
        waiting, _ = await pipe.execute()
    commands = [json.loads(v) for v in waiting.values()]
    return sorted(commands, key=lambda c: float(c.get("queued_at", 0)))


async def record_command(
    redis: aioredis.Redis, *, device_id: str, command: str, now: float
) -> None:
    """The last command sent to the bracelet, as the console shows it."""
    await redis.hset(
        keys.gateway_device(device_id),
        mapping={"last_command": command, "last_command_at": str(round(now, 3))},
    )


async def record_answer(redis: aioredis.Redis, *, device_id: str, answer: str, now: float) -> None:
    """The bracelet's last answer to a command."""
    await redis.hset(
        keys.gateway_device(device_id),
        mapping={"last_answer": answer[:200], "last_answer_at": str(round(now, 3))},
    )


async def state(redis: aioredis.Redis, *, device_id: str) -> dict[str, str]:
    """Everything the gateway recorded about the bracelet (auth code excluded)."""
    found: dict[Any, Any] = await redis.hgetall(keys.gateway_device(device_id))
    out = {store.text(k) or "": store.text(v) or "" for k, v in found.items()}
    out.pop("auth_code", None)
    return out


async def summary(redis: aioredis.Redis, *, device_id: str) -> dict[str, Any]:
    """What the registry shows: connected now (a gateway holds the socket), last connection,
    last command and the bracelet's last answer, times as epoch seconds (None: never)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(keys.gateway_holder(device_id))
        pipe.hgetall(keys.gateway_device(device_id))
        held, found = await pipe.execute()
    fields = {store.text(k) or "": store.text(v) or "" for k, v in found.items()}

    def when(name: str) -> float | None:
        value = fields.get(name)
        return float(value) if value else None

    return {
        "connected": bool(held),
        "connected_at": when("connected_at"),
        "disconnected_at": when("disconnected_at"),
        "last_command": fields.get("last_command") or None,
        "last_command_at": when("last_command_at"),
        "last_answer": fields.get("last_answer") or None,
        "last_answer_at": when("last_answer_at"),
    }


async def dead_letter(
    redis: aioredis.Redis,
    *,
    reason: str,
    detail: str,
    source: str,
    frame: bytes,
    device_id: str | None,
    elder_id: int | None,
    received_at: float,
) -> bool:
    """Dead-letter a frame in the ingest's rejected stream; False for the same frame again."""
    payload = frame[: DEAD_LETTER_PAYLOAD_CHARS // 2].hex()
    identity = hashlib.blake2b(source.encode() + b"\0" + frame, digest_size=12).hexdigest()
    fields = {
        "reason": reason,
        "detail": detail[:300],
        "topic": source[:200],
        "payload": payload,
        "device_id": device_id or "",
        "elder_id": str(elder_id) if elder_id is not None else "",
        "received_ms": str(round(received_at * 1000)),
    }
    args = [x for pair in fields.items() for x in pair]
    done = await DEAD_LETTER_SCRIPT.run_async(
        redis,
        keys=[core_keys.REJECTED, core_keys.REJECTED_COUNTS, core_keys.rejected_seen(identity)],
        args=args,
    )
    return bool(done)
