"""Bracelets in stock and their claim codes: a family binds a bracelet only with the code
printed on its box, so typing a neighbour's IMEI no longer hands over her whereabouts.

Codes are Crockford base32 without I L O U (nothing to misread on a box), drawn with
``secrets``; only a hash salted with the device id is stored, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel
from redis.exceptions import WatchError

from devices import keys
from devices.registry.schemas import DeviceId, Protocol
from locator.core import store
from locator.core.auth import Principal
from locator.core.clock import Clock, isoformat
from locator.core.errors import Conflict, Forbidden, HomewardError, Unprocessable
from locator.core.schemas import Page, Strict

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 10  # 50 bits; printed as two groups of five
MIN_CODE_LENGTH = 8
# Counted before the code is checked, per bracelet, for an hour: guessing gets 5 tries.
MAX_CLAIMS_PER_HOUR = 5
CLAIM_WINDOW_S = 3600
# What people type for the letters the alphabet leaves out.
_READ_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})
REFUSED = "this bracelet cannot be claimed with that code"


class TooManyClaims(HomewardError):
    status_code = 429


class StockCreate(Strict):
    device_id: DeviceId
    protocol: Protocol = "native"


class StockCreated(BaseModel):
    device_id: str
    protocol: Protocol
    claim_code: str  # shown here once: print it on the box


class StockRead(BaseModel):
    device_id: str
    protocol: Protocol
    created_at: str


def new_code() -> str:
    """A fresh claim code, e.g. ``7K3QM-9XD2P`` (pure)."""
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    return f"{raw[:5]}-{raw[5:]}"


def normalize(code: str) -> str | None:
    """The code as stored (upper case, no separators), or None if it cannot be one (pure)."""
    cleaned = code.upper().replace("-", "").replace(" ", "").translate(_READ_AS)
    if len(cleaned) < MIN_CODE_LENGTH or len(cleaned) > 32:
        return None
    if any(c not in ALPHABET for c in cleaned):
        return None
    return cleaned


def _digest(device_id: str, code: str) -> str:
    return hashlib.sha256(f"{device_id}\0{code}".encode()).hexdigest()


def _require_staff(caller: Principal) -> None:
    if not caller.is_staff:
        raise Forbidden("only staff manage the bracelet stock")


async def put(
    redis: aioredis.Redis, *, device_id: str, protocol: str, code: str, clock: Clock
) -> None:
    """Stock a bracelet with a (normalized) code; 409 if it is registered or stocked."""
    record = [
        "protocol",
        protocol,
        "code",
        _digest(device_id, code),
        "created_at",
        isoformat(clock.now()),
    ]
    stock_key = keys.device_stock(device_id)
    if await redis.exists(stock_key):
        raise Conflict(f"device {device_id} is already in stock")
    if await redis.exists(keys.device(device_id)):
        raise Conflict(f"device {device_id} is already registered")
    # The shelf (another slot) first, then the record: an entry without a record is not
    # listed and claims nothing (a crash between, or a racing stock of it), and stocking it
    # again writes the record. The record is written once, under a WATCH of itself.
    await redis.zadd(keys.DEVICE_STOCK, {device_id: 0})
    async with redis.pipeline(transaction=True) as pipe:
        try:
            await pipe.watch(stock_key)
            # HLEN, not EXISTS: redis-py's async cluster pipeline does not run EXISTS
            # at once after a WATCH (a multi-key command there).
            if await pipe.hlen(stock_key):
                raise Conflict(f"device {device_id} is already in stock")
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.hset(stock_key, items=record)
            await pipe.execute()
        except WatchError:
            raise Conflict("the device changed meanwhile; try again") from None


async def discard(redis: aioredis.Redis, *, device_id: str) -> None:
    """Forget a stock record (an import row that failed after stocking)."""
    # The record first: a shelf entry left without one is neither listed nor claimable.
    await redis.delete(keys.device_stock(device_id))
    await redis.zrem(keys.DEVICE_STOCK, device_id)


async def add(
    redis: aioredis.Redis, *, caller: Principal, body: StockCreate, clock: Clock
) -> StockCreated:
    """Stock a new bracelet (staff) with a fresh claim code, shown once."""
    _require_staff(caller)
    code = new_code()
    normalized = normalize(code)
    assert normalized is not None
    await put(redis, device_id=body.device_id, protocol=body.protocol, code=normalized, clock=clock)
    return StockCreated(device_id=body.device_id, protocol=body.protocol, claim_code=code)


async def list_page(
    redis: aioredis.Redis, *, caller: Principal, cursor: str | None, limit: int
) -> Page[StockRead]:
    """Bracelets in stock and not bound (staff), by device id; codes are never shown."""
    _require_staff(caller)
    start = f"({cursor}" if cursor else "-"
    limit = max(1, min(limit, store.MAX_PAGE))
    ids = store.texts(
        await redis.zrangebylex(keys.DEVICE_STOCK, start, "+", start=0, num=limit + 1)
    )
    next_cursor = None
    if len(ids) > limit:
        ids = ids[:limit]
        next_cursor = ids[-1]
    items = []
    for device_id in ids:
        record: dict[str, str] = await redis.hgetall(keys.device_stock(device_id))  # type: ignore[assignment]
        if record:
            items.append(
                StockRead(
                    device_id=device_id,
                    protocol=record["protocol"],
                    created_at=record.get("created_at", ""),
                )
            )
    return Page[StockRead](items=items, next=next_cursor)


async def check_claim(redis: aioredis.Redis, *, device_id: str, code: str) -> str:
    """The stocked bracelet's protocol if ``code`` is its claim code; 403 or 429 otherwise.

    The attempt is counted before anything is looked up, and an unknown, bound or wrongly
    coded bracelet all get the same 403: the answer tells a stranger nothing.
    """
    counter = keys.claim_attempts(device_id)
    async with redis.pipeline(transaction=True) as pipe:  # one key: the window and count
        pipe.set(counter, 0, ex=CLAIM_WINDOW_S, nx=True)
        pipe.incr(counter)
        _, attempts = await pipe.execute()
    async with redis.pipeline(transaction=False) as pipe:  # two slots: read, not a transaction
        pipe.zscore(keys.DEVICE_STOCK, device_id)
        pipe.hgetall(keys.device_stock(device_id))
        in_stock, record = await pipe.execute()
    if int(attempts) > MAX_CLAIMS_PER_HOUR:
        raise TooManyClaims("too many claim attempts for this bracelet: try again in an hour")
    normalized = normalize(code) or ""
    expected = record.get("code") or _digest(device_id, "\0unknown")
    matches = hmac.compare_digest(_digest(device_id, normalized), expected)
    if not (matches and in_stock is not None and record):
        raise Forbidden(REFUSED)
    await redis.delete(counter)
    return str(record["protocol"])


def reconcile(body: dict[str, Any], *, stocked_protocol: str, explicit: bool) -> dict[str, Any]:
    """A claim's device body with the stocked protocol (422 if the caller said another)."""
    if explicit and body.get("protocol") != stocked_protocol:
        raise Unprocessable(["protocol"], f"this bracelet speaks {stocked_protocol}")
    return {**body, "protocol": stocked_protocol}
