"""The gateway's MQTT side: QoS 1 publishes whose PUBACK resolves an asyncio future, and the
command subscription handed to the event loop.

paho runs its own network thread; its callbacks only schedule work on the gateway's event
loop (``call_soon_threadsafe``), so the loop never blocks on the broker. A publish is
registered under its message id on the loop right after ``publish`` returns, and the PUBACK
callback is scheduled on the same loop, so it can never be handled before the registration.
PUBACKs are queued and resolved in batches: one loop wake-up per batch, not per message (the
bench showed the wake-ups and a timer per publish as the gateway's largest costs after paho).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho

from locator.core.logging import get_logger
from locator.core.mqtt import address, connect_options, make_client

log = get_logger(__name__)

COMMAND_TOPIC = "homeward/devices/+/cmd"
MAX_QUEUED = 20_000  # publishes held while the broker is away; beyond: no ack, the device resends


def uplink_topic(device_id: str) -> str:
    return f"homeward/devices/{device_id}/up"


class MqttBridge:
    """One paho connection for every socket of a gateway process."""

    def __init__(
        self,
        url: str,
        *,
        client_id: str,
        loop: asyncio.AbstractEventLoop,
        on_command: Callable[[str, bytes], None],
    ) -> None:
        self._loop = loop
        self._on_command = on_command
        self._waiting: dict[int, tuple[asyncio.Future[None], float]] = {}
        self._acked: deque[int] = deque()
        self._wake_lock = threading.Lock()
        self._wake_scheduled = False
        self.connected = asyncio.Event()  # connected and subscribed to the commands
        # Persistent: commands published while the gateway restarts wait for it on the broker.
        self._client = make_client(url, client_id=client_id, persistent=True)
        self._client.max_queued_messages_set(MAX_QUEUED)
        self._client.on_connect = self._connected
        self._client.on_disconnect = self._disconnected
        self._client.on_publish = self._published
        self._client.on_subscribe = self._subscribed
        self._client.on_message = self._message
        host, port = address(url)
        self._client.connect_async(
            host, port, keepalive=30, **connect_options(url, persistent=True)
        )
        self._client.loop_start()

    # --- paho's thread: hand everything to the loop ---------------------------------------
    def _connected(
        self, client: paho.Client, userdata: object, flags: object, reason: Any, props: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("gateway_mqtt_refused", reason=str(reason))
            return
        client.subscribe(COMMAND_TOPIC, qos=1)

    def _subscribed(
        self, client: paho.Client, userdata: object, mid: int, reasons: object, props: object
    ) -> None:
        self._loop.call_soon_threadsafe(self.connected.set)

    def _disconnected(
        self, client: paho.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        log.warning("gateway_mqtt_disconnected", reason=str(reason))
        self._loop.call_soon_threadsafe(self.connected.clear)

    def _published(
        self, client: paho.Client, userdata: object, mid: int, reason: object, props: object
    ) -> None:
        self._acked.append(mid)
        with self._wake_lock:
            if self._wake_scheduled:
                return  # the loop has a pass over the queue coming
            self._wake_scheduled = True
        self._loop.call_soon_threadsafe(self._resolve_acked)

    def _message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        parts = message.topic.split("/")
        if len(parts) == 4 and parts[3] == "cmd":
            self._loop.call_soon_threadsafe(self._on_command, parts[2], bytes(message.payload))

    # --- the loop ---------------------------------------------------------------------------
    def _resolve_acked(self) -> None:
        with self._wake_lock:
            self._wake_scheduled = False
        while self._acked:
            waiting = self._waiting.pop(self._acked.popleft(), None)
            if waiting is not None and not waiting[0].done():
                waiting[0].set_result(None)

    async def expire(self, timeout_s: float) -> None:
        """Fail publishes unacknowledged after ``timeout_s`` (one sweep a second, no timer each)."""
        while True:
            await asyncio.sleep(1.0)
            late = time.monotonic() - timeout_s
            for mid in [m for m, (_, at) in self._waiting.items() if at < late]:
                future, _ = self._waiting.pop(mid)
                if not future.done():
                    future.set_exception(TimeoutError(f"no PUBACK in {timeout_s:.0f} s"))

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        """Publish QoS 1; the future resolves at the broker's PUBACK (fails if not queued)."""
        future: asyncio.Future[None] = self._loop.create_future()
        info = self._client.publish(topic, payload, qos=1)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            future.set_exception(ConnectionError(f"not queued: {paho.error_string(info.rc)}"))
            return future
        self._waiting[info.mid] = (future, time.monotonic())
        return future

    def forget(self, futures: list[asyncio.Future[None]]) -> None:
        """Stop waiting for publishes whose PUBACK came too late to matter."""
        done = {id(f) for f in futures}
        for mid in [m for m, (f, _) in self._waiting.items() if id(f) in done]:
            del self._waiting[mid]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
