"""Downlink commands to bracelets: what each protocol understands, and sending it."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, Literal

import redis.asyncio as aioredis
from prometheus_client import Counter
from pydantic import BaseModel, Field

from devices import keys
from devices.elders import service as elders
from locator.core import store
from locator.core.auth import Principal
from locator.core.clock import Clock, isoformat
from locator.core.errors import NotFound, Unprocessable
from locator.core.mqtt import BrokerUnavailable, Publisher
from locator.core.schemas import Strict

COMMANDS = Counter(
    "homeward_device_commands_total", "Downlink commands sent", ["action", "protocol"]
)

Action = Literal["reportLocation", "setInterval"]


class CommandBody(Strict):
    action: Action
    seconds: Annotated[int | None, Field(ge=5, le=3600)] = None


class CommandSent(BaseModel):
    device_id: str
    topic: str
    command: dict[str, Any]
    sent_at: str


def command_message(
    device: dict[str, Any], *, action: Action, seconds: int | None
) -> tuple[str, dict[str, Any]]:
    """The topic and payload of a command for this device's protocol (pure)."""
    if device["protocol"] == "owntracks":
        if action != "reportLocation":
            raise Unprocessable(["action"], "an OwnTracks device understands only reportLocation")
        return f"owntracks/{device['external_id']}/cmd", {"_type": "cmd", "action": action}
    topic = f"homeward/devices/{device['device_id']}/cmd"
    if action == "setInterval":
        if seconds is None:
            raise Unprocessable(["seconds"], "setInterval needs seconds (5–3600)")
        return topic, {"_type": "cmd", "action": action, "seconds": seconds}
    return topic, {"_type": "cmd", "action": action}


def send_command(
    publisher: Publisher, device: dict[str, Any], *, action: Action, seconds: int | None = None
) -> tuple[str, dict[str, Any]]:
    """Publish a command (QoS 1, blocking until the broker has it); for any stage's use."""
    topic, payload = command_message(device, action=action, seconds=seconds)
    publisher.publish(topic, json.dumps(payload).encode(), qos=1)
    COMMANDS.labels(action, device["protocol"]).inc()
    return topic, payload


async def command(
    redis: aioredis.Redis,
    *,
    caller: Principal,
    device_id: str,
    body: CommandBody,
    publisher: Publisher | None,
    clock: Clock,
) -> CommandSent:
    """Send a command to a device the caller may change."""
    device = await store.get_doc(redis, keys.device(device_id))
    if device is None:
        raise NotFound(f"device {device_id} not found")
    await elders.authorize(redis, caller=caller, elder_id=device["elder_id"], write=True)
    command_message(device, action=body.action, seconds=body.seconds)  # 422 before any I/O
    if publisher is None:
        raise BrokerUnavailable("no MQTT broker is configured for commands")
    topic, payload = await asyncio.to_thread(
        send_command, publisher, device, action=body.action, seconds=body.seconds
    )
    return CommandSent(
        device_id=device_id, topic=topic, command=payload, sent_at=isoformat(clock.now())
    )
