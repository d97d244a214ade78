"""Web push (VAPID) to volunteers who subscribed in the browser: a best-effort extra.

FCM-based push is blocked in mainland China, so it never replaces SMS or voice. A
subscription the push service answers 404 or 410 for is gone and is dropped.
"""

from __future__ import annotations

import json
from typing import Any

import redis
from pywebpush import WebPushException, webpush

from alerts.notify.channels import Message, Result
from locator.core import keys
from locator.core.logging import get_logger

log = get_logger(__name__)
TTL_S = 600  # an alert older than ten minutes is not worth showing


def subscribe(client: redis.Redis, *, volunteer_id: int, subscription: dict[str, Any]) -> None:
    client.hset(
        keys.push_subscriptions(volunteer_id), subscription["endpoint"], json.dumps(subscription)
    )


def unsubscribe(client: redis.Redis, *, volunteer_id: int, endpoint: str) -> bool:
    return bool(client.hdel(keys.push_subscriptions(volunteer_id), endpoint))


class WebPush:
    name = "webpush"

    def __init__(self, client: redis.Redis, *, private_key: str, subject: str) -> None:
        self._client = client
        self._private_key = private_key
        self._subject = subject

    def send(self, message: Message) -> Result:
        kind, _, ident = message.recipient.partition(":")
        if kind != "volunteer":
            return Result("failed", "web push reaches volunteers only")
        key = keys.push_subscriptions(int(ident))
        subscriptions = self._client.hgetall(key)
        if not subscriptions:
            return Result("failed", "no browser subscription")
        # Encrypted to the subscription, but staff may register one for a volunteer: no
        # one-tap link (the service worker opens /v/{incident}, where the session is).
        payload = json.dumps(
            {"title": "爱回家 Homeward", "body": message.text, **message.data}, ensure_ascii=False
        )
        delivered, transient, details = 0, 0, []
        for endpoint, raw in subscriptions.items():
            try:
                webpush(
                    json.loads(raw),
                    data=payload,
                    vapid_private_key=self._private_key,
                    vapid_claims={"sub": self._subject},
                    ttl=TTL_S,
                    timeout=5,
                )
                delivered += 1
            except WebPushException as exc:
                code = exc.response.status_code if exc.response is not None else 0
                if code in (404, 410):
                    self._client.hdel(key, endpoint)
                    details.append(f"{code}: subscription gone, dropped")
                elif code == 429 or code >= 500 or code == 0:
                    transient += 1
                    details.append(f"{code or 'no answer'}: {exc}")
                else:
                    details.append(f"{code}: {exc}")
        if delivered:
            return Result("sent", f"pushed to {delivered} browser(s)")
        if transient:
            return Result("transient", "; ".join(details))
        return Result("failed", "; ".join(details))
