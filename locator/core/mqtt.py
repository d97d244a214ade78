"""paho-mqtt wiring: client factory from a URL, and a blocking publisher for downlinks."""

from __future__ import annotations

import threading
from typing import Any, Protocol, TypeVar, overload
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from locator.core.errors import HomewardError


class BrokerUnavailable(HomewardError):
    status_code = 503


class Publisher(Protocol):
    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        """Publish and wait until the broker has it (QoS 1 PUBACK)."""
        ...


ClientT = TypeVar("ClientT", bound=paho.Client)


@overload
def make_client(
    url: str, *, client_id: str, persistent: bool, manual_ack: bool = False
) -> paho.Client: ...


@overload
def make_client(
    url: str,
    *,
    client_id: str,
    persistent: bool,
    manual_ack: bool = False,
    client_class: type[ClientT],
) -> ClientT: ...


def make_client(
    url: str,
    *,
    client_id: str,
    persistent: bool,
    manual_ack: bool = False,
    client_class: type[paho.Client] = paho.Client,
) -> paho.Client:
    """A paho v2-callback client for ``url`` (not yet connected; see ``connect_options``).

    ``persistent`` keeps the session on the broker across disconnects, so QoS 1 messages
    published while we are away are queued for us, not dropped. MQTT 3.1.1 (the default,
    and all the embedded amqtt speaks) does it with clean_session=False and the broker's
    expiry; ``?protocol=5`` on the URL uses MQTT 5: clean_start=False plus a session expiry.
    ``client_class``: a paho ``Client`` subclass with the same constructor (the ingest's
    ``mqtt_burst.BurstClient``).
    """
    parts = urlsplit(url)
    v5 = is_v5(url)
    client = client_class(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=None if v5 else not persistent,
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
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


SESSION_EXPIRY_S = 86_400  # a day: longer than any restart or outage we plan to ride out


def is_v5(url: str) -> bool:
    return "protocol=5" in (urlsplit(url).query or "")


def connect_options(url: str, *, persistent: bool) -> dict[str, Any]:
    """Extra arguments of connect()/connect_async() for the session the URL asks for."""
    if not is_v5(url):
        return {}
    if not persistent:
        return {"clean_start": True}
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = SESSION_EXPIRY_S
    return {"clean_start": False, "properties": properties}


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
        self._client.connect_async(
            host, port, keepalive=30, **connect_options(url, persistent=False)
        )
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
