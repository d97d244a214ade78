"""Twilio SMS and voice behind the channel interface, with the official client.

``HOMEWARD_TWILIO_BASE_URL`` sends the client's requests to a Twilio-compatible server: the
library has no base-URL option, so a custom ``HttpClient`` rewrites ``https://api.twilio.com``.
Twilio's answer decides the outcome: an invalid (21211) or unsubscribed (21610) number is
final for that channel (the next channel is tried), 20429 and 5xx are transient (retried),
and so is a request that never left (connection refused, DNS, connect timeout); no answer
after sending (read timeout, connection lost) is an unknown fate, which the outbox treats
like a failure of this channel, never resending on it.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import requests
import urllib3
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from alerts import links
from alerts.notify.channels import Message, Result

TWILIO_API = "https://api.twilio.com"
PERMANENT = {21211: "invalid number", 21610: "unsubscribed (STOP)", 21614: "not a mobile number"}


class RewritingHttpClient(TwilioHttpClient):  # type: ignore[misc]
    """Sends every Twilio API request to ``base_url`` instead of api.twilio.com."""

    def __init__(self, base_url: str, *, timeout: float = 5.0) -> None:
        super().__init__(timeout=timeout)
        self._base = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        if url.startswith(TWILIO_API):
            url = self._base + url[len(TWILIO_API) :]
        return super().request(method, url, *args, **kwargs)


def make_client(*, account_sid: str, auth_token: str, base_url: str | None) -> Client:
    http = RewritingHttpClient(base_url) if base_url else TwilioHttpClient(timeout=5.0)
    return Client(account_sid, auth_token, http_client=http)


def _callback(public_url: str | None, path: str, attempt: str) -> str | None:
    if not public_url:
        return None
    return f"{public_url.rstrip('/')}{path}?{urllib.parse.urlencode({'attempt': attempt})}"


def _result_of(exc: Exception) -> Result:
    if isinstance(exc, TwilioRestException):
        code = exc.code or 0
        if code in PERMANENT:
            return Result("failed", f"twilio {code}: {PERMANENT[code]}")
        if code == 20429 or exc.status == 429 or exc.status >= 500:
            return Result("transient", f"twilio {code or exc.status}: {exc.msg}")
        return Result("failed", f"twilio {code or exc.status}: {exc.msg}")
    if _never_sent(exc):
        return Result("transient", f"Twilio unreachable: {type(exc).__name__}")
    # No answer from Twilio: the request may or may not have been taken.
    return Result("unknown", f"{type(exc).__name__}: {exc}")


def _never_sent(exc: Exception) -> bool:
    """The request never reached Twilio (refused, no route, DNS, connect timeout): retry it."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if not isinstance(exc, requests.exceptions.ConnectionError):
        return False
    reason = getattr(exc.args[0], "reason", exc.args[0]) if exc.args else None
    # urllib3's NewConnectionError (refused, DNS) is a ConnectTimeoutError too.
    return isinstance(reason, urllib3.exceptions.ConnectTimeoutError)


class _TwilioChannel:
    def __init__(
        self,
        client: Client,
        *,
        from_: str,
        public_url: str | None,
        link_secret: bytes | None = None,
    ) -> None:
        self._client = client
        self._from = from_
        self._public_url = public_url
        self._link_secret = link_secret

    def _body(self, message: Message) -> str:
        """The text with the recipient's own one-tap link where the stored text has none."""
        kind, _, ident = message.recipient.partition(":")
        expires = message.data.get("link_expires")
        incident = message.data.get("incident_id")
        if self._link_secret is None or kind != "volunteer" or expires is None or not incident:
            return message.text
        return links.fill(
            message.text,
            self._link_secret,
            public_url=self._public_url,
            locale=message.locale,
            incident_id=int(str(incident)),
            volunteer_id=int(ident),
            expires=float(str(expires)),
        )


class TwilioSms(_TwilioChannel):
    name = "sms"

    def send(self, message: Message) -> Result:
        if not message.phone:
            return Result("failed", "no phone number")
        kwargs: dict[str, Any] = {
            "to": message.phone,
            "from_": self._from,
            "body": self._body(message),
        }
        callback = _callback(self._public_url, "/webhooks/twilio/status", message.attempt_id)
        if callback:
            kwargs["status_callback"] = callback
        try:
            sent = self._client.messages.create(**kwargs)
        except Exception as exc:
            return _result_of(exc)
        return Result("sent", "accepted by Twilio", provider_id=str(sent.sid))


class TwilioVoice(_TwilioChannel):
    name = "voice"

    def send(self, message: Message) -> Result:
        if not message.phone:
            return Result("failed", "no phone number")
        url = _callback(self._public_url, "/webhooks/twilio/voice", message.attempt_id)
        if url is None:
            return Result("failed", "voice calls need HOMEWARD_PUBLIC_URL for their TwiML")
        callback = _callback(self._public_url, "/webhooks/twilio/status", message.attempt_id)
        try:
            call = self._client.calls.create(
                to=message.phone, from_=self._from, url=url, status_callback=callback or ""
            )
        except Exception as exc:
            return _result_of(exc)
        return Result("sent", "call placed by Twilio", provider_id=str(call.sid))
