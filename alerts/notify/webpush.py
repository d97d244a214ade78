"""Web push (VAPID) to volunteers who subscribed in the browser: a best-effort extra.

FCM-based push is blocked in mainland China, so it never replaces SMS or voice. A
subscription the push service answers 404 or 410 for is gone and is dropped.

An endpoint is a URL anyone with a volunteer's session can register, and the server then
posts to it: only https on a public host is accepted (``check_endpoint``), at most
``MAX_SUBSCRIPTIONS`` per volunteer (a new one replaces the oldest), and a delivery has one
overall deadline for all of a volunteer's endpoints together, so a push service that
answers slowly, byte by byte, cannot hold the delivery worker. Names are not resolved
here: a public name that resolves to a private address (DNS rebinding) is out of scope.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import urllib.parse
from typing import Any

import redis
from pywebpush import WebPushException, webpush_async

from alerts import keys
from alerts.notify.channels import Message, Result
from locator.core.logging import get_logger
from locator.core.scripts import Script

log = get_logger(__name__)
TTL_S = 600  # an alert older than ten minutes is not worth showing
MAX_SUBSCRIPTIONS = 5  # a phone, a tablet, a few browsers
DEADLINE_S = 5.0  # connect, send and answer, all endpoints together
_PRIVATE_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa", ".localdomain")

# Keep at most ARGV[3] subscriptions: a new endpoint beyond that replaces the oldest.
_SUBSCRIBE = Script(
    """
local new = redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
if new and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  local oldest, oldest_at = nil, nil
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local ok, doc = pcall(cjson.decode, all[i + 1])
    local at = (ok and type(doc) == 'table' and tonumber(doc['added'])) or 0
    if oldest == nil or at < oldest_at then oldest, oldest_at = all[i], at end
  end
  redis.call('HDEL', KEYS[1], oldest)
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return oldest
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return false
""",
    name="push_subscribe",
)


def check_endpoint(endpoint: str) -> str:
    """The endpoint if it is https on a public host; ValueError saying why not."""
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme != "https":
        raise ValueError("a push endpoint must be an https URL")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise ValueError("a push endpoint needs a host")
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            # "127.1", "0x7f000001", "2130706433": what the resolver would read as IPv4.
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            address = None
    if address is not None:
        mapped = getattr(address, "ipv4_mapped", None)
        if not (mapped or address).is_global:
            raise ValueError("a push endpoint must be on a public address")
        return endpoint
    if host == "localhost" or "." not in host or host.endswith(_PRIVATE_SUFFIXES):
        raise ValueError("a push endpoint must be on a public host")
    return endpoint


def subscribe(
    client: redis.Redis, *, volunteer_id: int, subscription: dict[str, Any], now: float
) -> str | None:
    """Store a subscription; returns the endpoint it replaced (the oldest beyond the limit)."""
    doc = {**subscription, "added": now}
    replaced = _SUBSCRIBE(
        client,
        keys=[keys.push_subscriptions(volunteer_id)],
        args=[subscription["endpoint"], json.dumps(doc), MAX_SUBSCRIPTIONS],
    )
    return str(replaced) if replaced else None


def unsubscribe(client: redis.Redis, *, volunteer_id: int, endpoint: str) -> bool:
    return bool(client.hdel(keys.push_subscriptions(volunteer_id), endpoint))


class WebPush:
    name = "webpush"

    def __init__(
        self,
        client: redis.Redis,
        *,
        private_key: str,
        subject: str,
        deadline_s: float = DEADLINE_S,
    ) -> None:
        self._client = client
        self._private_key = private_key
        self._subject = subject
        self._deadline_s = deadline_s

    def send(self, message: Message) -> Result:
        kind, _, ident = message.recipient.partition(":")
        if kind != "volunteer":
            return Result("failed", "web push reaches volunteers only")
        key = keys.push_subscriptions(int(ident))
        subscriptions: dict[str, str] = self._client.hgetall(key)  # type: ignore[assignment]
        if not subscriptions:
            return Result("failed", "no browser subscription")
        # Encrypted to the subscription, but staff may register one for a volunteer: no
        # one-tap link (the service worker opens /v/{incident}, where the session is).
        payload = json.dumps(
            {"title": _title(message.data), "body": message.text, **message.data},
            ensure_ascii=False,
        )
        answers = asyncio.run(self._push_all(subscriptions, payload))
        delivered, transient, details = 0, 0, []
        for endpoint, code, detail in answers:
            if code is not None and 200 <= code < 300:
                delivered += 1
            elif code in (404, 410):
                self._client.hdel(key, endpoint)
                details.append(f"{code}: subscription gone, dropped")
            elif code is None or code == 0 or code == 429 or code >= 500:
                transient += 1
                details.append(f"{code or 'no answer'}: {detail}")
            else:
                details.append(f"{code}: {detail}")
        if delivered:
            return Result("sent", f"pushed to {delivered} browser(s)")
        if transient:
            return Result("transient", "; ".join(details))
        return Result("failed", "; ".join(details))

    async def _push_all(
        self, subscriptions: dict[str, str], payload: str
    ) -> list[tuple[str, int | None, str]]:
        """(endpoint, HTTP status or None, detail) of each, all within one deadline."""
        tasks = {
            asyncio.ensure_future(self._push(json.loads(raw), payload)): endpoint
            for endpoint, raw in subscriptions.items()
        }
        done, pending = await asyncio.wait(tasks, timeout=self._deadline_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        out: list[tuple[str, int | None, str]] = []
        for task, endpoint in tasks.items():
            if task in done:
                code, detail = task.result()
                out.append((endpoint, code, detail))
            else:
                out.append((endpoint, None, f"no answer within {self._deadline_s:g} s"))
        return out

    async def _push(self, subscription: dict[str, Any], payload: str) -> tuple[int | None, str]:
        try:
            await webpush_async(
                subscription,
                data=payload,
                vapid_private_key=self._private_key,
                vapid_claims={"sub": self._subject},  # a new dict: pywebpush fills it in
                ttl=TTL_S,
            )
        except WebPushException as exc:
            return exc.status_code or 0, str(exc.message)
        except Exception as exc:  # refused, reset, DNS, TLS: the push service is unreachable
            return 0, f"{type(exc).__name__}: {exc}"
        return 201, ""


def _title(data: dict[str, object]) -> str:
    """A drill's notification says so before anything else, its title included."""
    return "【演练】爱回家 Homeward" if data.get("drill") else "爱回家 Homeward"
