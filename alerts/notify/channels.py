"""Notification channels behind one interface, and the order they are tried in.

A channel's ``send`` either delivers (``sent``), fails for good (``failed``: the next
channel is tried), fails for now (``transient``: retried with backoff, the same channel),
or cannot tell (``unknown``: the provider may have taken it; the next channel is tried,
this one never resent).

Each recipient has a chain (the guaranteed channels, tried in turn until one takes the
message) and extras (best effort, sent beside the chain, never a fallback): in mainland
China only SMS and voice are guaranteed; MQTT push and web push reach the volunteer app.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal, Protocol

from locator.core.mqtt import BrokerUnavailable, Publisher

Outcome = Literal["sent", "failed", "transient", "unknown", "superseded"]

# Tried in this order per kind of recipient; channels not configured are skipped. "log" is
# the always-on outbox log: the console and `GET notifications` show the message there.
CHAINS: dict[str, tuple[str, ...]] = {
    "volunteer": ("sms", "voice", "log"),
    "guardian": ("sms", "log"),
    "dispatcher": ("sms", "log"),
}
EXTRAS: dict[str, tuple[str, ...]] = {"volunteer": ("mqtt", "webpush")}


@dataclass(frozen=True, slots=True)
class Message:
    attempt_id: str
    recipient: str  # "volunteer:3", "guardian:12.0", "dispatcher:1"
    phone: str | None
    template: str
    text: str  # the stored text: a one-tap link is only a placeholder here
    data: dict[str, object]
    locale: str = "zh-CN"


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    detail: str = ""
    provider_id: str = ""


class Channel(Protocol):
    name: str

    def send(self, message: Message) -> Result: ...


class LogChannel:
    """The outbox log itself: always succeeds, so nobody's message is ever just lost."""

    name = "log"

    def send(self, message: Message) -> Result:
        return Result("sent", "recorded in the notifications log")


class MqttPushChannel:
    """Volunteer push over MQTT (``homeward/volunteers/{id}/alerts``), QoS 1."""

    name = "mqtt"

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher

    def send(self, message: Message) -> Result:
        kind, _, ident = message.recipient.partition(":")
        if kind != "volunteer":
            return Result("failed", "MQTT push reaches volunteers only")
        # The broker does not keep one volunteer off another's topic: no one-tap link here
        # (the app opens /v/{incident} with the session it already has).
        payload = {
            "attempt_id": message.attempt_id,
            "type": message.template,
            "text": message.text,
            **message.data,
        }
        try:
            self._publisher.publish(
                f"homeward/volunteers/{ident}/alerts",
                json.dumps(payload, ensure_ascii=False).encode(),
                qos=1,
            )
        except BrokerUnavailable as exc:
            return Result("transient", str(exc))
        return Result("sent", "published to the volunteer's MQTT topic")


def chain_for(recipient: str, available: set[str], *, start: str | None = None) -> list[str]:
    """The channels to try for a recipient, from ``start`` on, skipping unconfigured ones."""
    chain = list(CHAINS[recipient.split(":", 1)[0]])
    if start is not None and start in chain:
        chain = chain[chain.index(start) :]
    return [c for c in chain if c in available]


def extras_for(recipient: str, available: set[str]) -> list[str]:
    """Best-effort channels sent beside the chain (the volunteer app's push)."""
    return [c for c in EXTRAS.get(recipient.split(":", 1)[0], ()) if c in available]


def configured(
    *, mqtt_url: str | None, twilio: bool = False, webpush: bool = False
) -> frozenset[str]:
    """The channels this deployment can use."""
    names = {"log"}
    if mqtt_url:
        names.add("mqtt")
    if twilio:
        names.update({"sms", "voice"})
    if webpush:
        names.add("webpush")
    return frozenset(names)
