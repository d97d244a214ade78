"""MQTT credentials for bracelets and OwnTracks phones, and Mosquitto's password-file lines.

A device's password is derived from ``HOMEWARD_MQTT_DEVICE_SECRET`` and its MQTT username
(HMAC-SHA256), so the service never stores it and can show it again in an OwnTracks QR
code; changing the secret rotates every device's password at once. The broker keeps only
the PBKDF2-SHA512 hash (``$7$``, the format ``mosquitto_passwd`` writes).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from typing import Literal

# mosquitto_passwd's own default. The passwords are 144 random bits, so the iteration count
# adds nothing against guessing, while every device (re)connect pays it on the broker.
ITERATIONS = 101
SALT_BYTES = 12
# Mosquitto refuses %u in ACL patterns for names with / + #; ':' would break the passwd line.
_USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
SERVICE_PREFIX = "homeward-"
Kind = Literal["native", "owntracks"]


def valid_username(username: str) -> bool:
    """True if ``username`` can be a device's MQTT user (not a service user's name)."""
    return bool(_USERNAME.match(username)) and not username.startswith(SERVICE_PREFIX)


def device_password(*, secret: str, kind: Kind, username: str) -> str:
    """The MQTT password of bracelet or OwnTracks user ``username`` (URL-safe, 24 chars)."""
    # The kind is in the message: a phone registered as "<a bracelet's id>/x" gets a QR code
    # whose password is not that bracelet's, so it cannot log in as the bracelet.
    message = f"mqtt-device\0{kind}\0{username}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode()[:24]


def passwd_line(*, username: str, password: str, salt: bytes | None = None) -> str:
    """One Mosquitto password-file line ``user:$7$iterations$salt$hash``."""
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    encoded = base64.b64encode(salt).decode(), base64.b64encode(key).decode()
    return f"{username}:$7${ITERATIONS}${encoded[0]}${encoded[1]}"
