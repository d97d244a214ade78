"""paho-mqtt wiring: client factory from a URL, and a blocking publisher for downlinks."""

from __future__ import annotations

import threading
from typing import Protocol
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from locator.core.errors import HomewardError


class BrokerUnavailable(HomewardError):
    status_code = 503


class Publisher(Protocol):
    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        """Publish and wait until the broker has it (QoS 1 PUBACK)."""
        ...


def make_client(
    url: str, *, client_id: str, persistent: bool, manual_ack: bool = False
) -> paho.Client:
    """A paho v2-callback client for ``url`` (not yet connected).

    ``persistent`` keeps the session on the broker across disconnects (MQTT 3.1.1
    clean_session=False: the one session mode both Mosquitto and amqtt honour), so QoS 1
    messages published while we are away are queued for us, not dropped.
    """
    parts = urlsplit(url)
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=not persistent,
        protocol=paho.MQTTv311,
        manual_ack=manual_ack,
    )
    if parts.username:
        client.username_pw_set(
            unquote(parts.username), unquote(parts.password) if parts.password else None
        )
    if parts.scheme == "mqtts":
        client.tls_set()
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    default = 8883 if parts.scheme == "mqtts" else 1883
    return parts.hostname or "127.0.0.1", parts.port or default


class MqttPublisher:
    """One long-lived connection for the API's downlink commands."""

    def __init__(self, url: str, *, client_id: str) -> None:
        self._client = make_client(url, client_id=client_id, persistent=False)
        self._connected = threading.Event()
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        host, port = address(url)
        self._client.connect_async(host, port, keepalive=30)
        self._client.loop_start()

    def _on_connect(
        self, client: paho.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        if not getattr(reason, "is_failure", False):
            self._connected.set()

    def _on_disconnect(
        self, client: paho.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        self._connected.clear()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        if not self._connected.wait(timeout=3):
            raise BrokerUnavailable("the MQTT broker is unreachable; the command was not sent")
        info = self._client.publish(topic, payload, qos=qos)
        try:
            info.wait_for_publish(timeout=5)
        except (OSError, RuntimeError, ValueError) as exc:
            raise BrokerUnavailable(f"the MQTT broker did not take the command: {exc}") from None
        if not info.is_published():
            raise BrokerUnavailable("the MQTT broker did not acknowledge the command in 5 s")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
