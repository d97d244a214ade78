"""The OwnTracks app's own configuration for one phone, as a file, a URL and a QR code.

The app imports a ``_type: configuration`` document from an ``owntracks:///config?inline=``
URL (base64 of the JSON), which a QR code carries to the phone's camera: the family scans
it instead of typing host, port, user and device by hand. Remote commands stay on
(``cmd``), since adaptive reporting sends ``reportLocation``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import segno

from devices.registry import mqtt_credentials

MONITORING_MOVE = 2  # report continuously while moving: what wandering detection needs


def phone_password(*, secret: str | None, external_id: str) -> str | None:
    """The MQTT password of the phone ``user/device`` (None: the broker takes anyone)."""
    if not secret:
        return None
    user = external_id.split("/", 1)[0]
    return mqtt_credentials.device_password(secret=secret, kind="owntracks", username=user)


def app_config(
    *, host: str, port: int, tls: bool, external_id: str, password: str | None = None
) -> dict[str, Any]:
    """The configuration document for the phone registered as ``user/device``."""
    user, device = external_id.split("/", 1)
    # The broker refuses anonymous clients in production: the phone logs in as its user.
    auth = {"auth": True, "password": password} if password else {"auth": False}
    return {
        "_type": "configuration",
        "mode": 0,  # MQTT
        "host": host,
        "port": port,
        "tls": tls,
        **auth,
        "username": user,
        "deviceId": device,
        "tid": device[:2],
        "pubTopicBase": "owntracks/%u/%d",
        "monitoring": MONITORING_MOVE,
        "cmd": True,
    }


def config_url(config: dict[str, Any]) -> str:
    """The URL the app opens to import ``config``."""
    raw = json.dumps(config, separators=(",", ":"), ensure_ascii=False).encode()
    return "owntracks:///config?inline=" + base64.b64encode(raw).decode()


def qr_data_uri(url: str) -> str:
    """An SVG QR code of ``url`` as a data URI, for an <img> on the family portal."""
    return str(segno.make(url, error="m").svg_data_uri(scale=4, border=2))
