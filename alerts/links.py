"""Signed, expiring one-tap links for SMS: ``/v/{incident}?t=<token>``.

The token names the volunteer and an expiry and carries a truncated HMAC under a secret
kept in Redis (created once, shared by every process), so a link is short enough for a
two-part SMS and cannot be forged or reused for another volunteer or incident.

A link opens a volunteer session, so it exists only in the SMS that carries it: the stored
text has a placeholder (what the console and the family read: "link sent"), and the SMS
channel signs it again at send time from (incident, volunteer, expiry), which gives the
same token every time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

import redis

from alerts import keys

LINK_TTL_S = 6 * 3600
_MAC_BYTES = 9


def secret(client: redis.Redis) -> bytes:
    """The link-signing secret, created on first use."""
    client.set(keys.LINK_SECRET, secrets.token_hex(32), nx=True)
    return str(client.get(keys.LINK_SECRET)).encode()


def _mac(key: bytes, incident_id: int, volunteer_id: int, expires: int) -> str:
    digest = hmac.new(key, f"{incident_id}.{volunteer_id}.{expires}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()[:_MAC_BYTES]).decode()


def sign(key: bytes, *, incident_id: int, volunteer_id: int, expires: float) -> str:
    exp = int(expires)
    return f"{volunteer_id}.{exp:x}.{_mac(key, incident_id, volunteer_id, exp)}"


class BadLink(Exception):
    """The link is forged, for another incident, or expired (``expired`` tells which)."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


def verify(key: bytes, *, incident_id: int, token: str, now: float) -> int:
    """The volunteer a link was made for; BadLink if forged or expired."""
    try:
        vid_text, exp_text, mac = token.split(".")
        volunteer_id, expires = int(vid_text), int(exp_text, 16)
    except ValueError:
        raise BadLink("this link is not valid") from None
    if not hmac.compare_digest(mac, _mac(key, incident_id, volunteer_id, expires)):
        raise BadLink("this link is not valid")
    if now > expires:
        raise BadLink("this link has expired", expired=True)
    return volunteer_id


def expires_at(token: str) -> int:
    """The expiry (epoch seconds) a verified link token carries."""
    return int(token.split(".")[1], 16)


def url(public_url: str | None, *, incident_id: int, token: str) -> str:
    base = (public_url or "http://127.0.0.1:8000").rstrip("/")
    return f"{base}/v/{incident_id}?t={token}"


# What everyone but the SMS's recipient sees where the link was.
PLACEHOLDER = {"zh-CN": "[链接已发送]", "en": "[link sent]"}
_LINK = re.compile(r"\S*/v/\d+\?t=\S+")


def placeholder(locale: str) -> str:
    return PLACEHOLDER.get(locale, PLACEHOLDER["zh-CN"])


def redact(text: str, locale: str) -> str:
    """``text`` with every one-tap link replaced by the placeholder (texts stored earlier)."""
    return _LINK.sub(placeholder(locale), text)


def fill(
    text: str,
    key: bytes,
    *,
    public_url: str | None,
    locale: str,
    incident_id: int,
    volunteer_id: int,
    expires: float,
) -> str:
    """The SMS as sent: the placeholder replaced by the recipient's own signed link."""
    mark = placeholder(locale)
    if mark not in text:
        return text
    token = sign(key, incident_id=incident_id, volunteer_id=volunteer_id, expires=expires)
    return text.replace(mark, url(public_url, incident_id=incident_id, token=token), 1)
