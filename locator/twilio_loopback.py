"""A Twilio-compatible HTTP server on loopback, for tests and `bench alerts`.

It answers the two REST calls Homeward makes (``Messages.json``, ``Calls.json``) the way
Twilio does: basic auth checked, ``201`` with a resource JSON, or Twilio's error JSON for
an invalid number (21211), an unsubscribed number (21610), too many requests (20429) or a
server error (500). After a message it posts signed status callbacks (``sent`` then
``delivered``, or ``undelivered`` for numbers told to fail), so the real webhook path runs.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests
from twilio.request_validator import RequestValidator


@dataclass
class Received:
    kind: str  # "message" | "call"
    form: dict[str, str]
    at: float  # time.monotonic() on arrival
    sid: str
    status: int


@dataclass
class Behaviour:
    """How the server answers per destination number."""

    invalid: set[str] = field(default_factory=set)  # 21211
    unsubscribed: set[str] = field(default_factory=set)  # 21610 (the number sent STOP)
    rate_limited: set[str] = field(default_factory=set)  # 20429
    server_error: set[str] = field(default_factory=set)  # 500
    undeliverable: set[str] = field(default_factory=set)  # accepted, then "undelivered"
    hang_up: set[str] = field(default_factory=set)  # taken, but the answer never arrives
    callbacks: bool = True  # post status callbacks to StatusCallback


class TwilioLoopback:
    """Start with ``start()``; requests land in ``received``; stop with ``stop()``."""

    def __init__(self, *, account_sid: str, auth_token: str, host: str = "127.0.0.1") -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.behaviour = Behaviour()
        self.received: list[Received] = []
        self.callback_errors: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> TwilioLoopback:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def messages(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.kind == "message"]

    def calls(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.kind == "call"]

    # --- the HTTP side -------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                status, body = outer._answer(self.path, self.headers.get("Authorization"), form)
                if status == 0:
                    self.close_connection = True  # the request was taken; no answer comes
                    return
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler

    def _authorized(self, header: str | None) -> bool:
        import base64

        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return header == f"Basic {expected}"

    def _answer(
        self, path: str, authorization: str | None, form: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        prefix = f"/2010-04-01/Accounts/{self.account_sid}/"
        if not self._authorized(authorization):
            return 401, _error(20003, "Authenticate", 401)
        if path == prefix + "Messages.json":
            kind, sid = "message", "SM" + secrets.token_hex(16)
        elif path == prefix + "Calls.json":
            kind, sid = "call", "CA" + secrets.token_hex(16)
        else:
            return 404, _error(20404, f"The requested resource {path} was not found", 404)
        to = form.get("To", "")
        b = self.behaviour
        if to in b.invalid:
            status, body = (
                400,
                _error(21211, f"The 'To' number {to} is not a valid phone number.", 400),
            )
        elif to in b.unsubscribed and kind == "message":
            status, body = 400, _error(21610, "Attempt to send to unsubscribed recipient", 400)
        elif to in b.rate_limited:
            status, body = 429, _error(20429, "Too Many Requests", 429)
        elif to in b.server_error:
            status, body = 500, _error(20500, "Internal Server Error", 500)
        else:
            status = 201
            body = {
                "sid": sid,
                "account_sid": self.account_sid,
                "to": to,
                "from": form.get("From"),
                "status": "queued",
                "body": form.get("Body"),
                "uri": f"{prefix}{'Messages' if kind == 'message' else 'Calls'}/{sid}.json",
            }
        with self._lock:
            self.received.append(Received(kind, form, time.monotonic(), sid, status))
        if to in b.hang_up:
            return 0, {}
        callback = form.get("StatusCallback")
        if status == 201 and callback and b.callbacks:
            final = "undelivered" if to in b.undeliverable else "delivered"
            if kind == "call":
                final = "no-answer" if to in b.undeliverable else "completed"
            threading.Thread(
                target=self._callbacks, args=(callback, kind, sid, to, final), daemon=True
            ).start()
        return status, body

    def _callbacks(self, url: str, kind: str, sid: str, to: str, final: str) -> None:
        steps = ["sent", final] if kind == "message" else ["ringing", final]
        for status in steps:
            if kind == "message":
                params = {
                    "MessageSid": sid,
                    "MessageStatus": status,
                    "To": to,
                    "AccountSid": self.account_sid,
                }
                if status == "undelivered":
                    params["ErrorCode"] = "30003"
            else:
                params = {
                    "CallSid": sid,
                    "CallStatus": status,
                    "To": to,
                    "AccountSid": self.account_sid,
                }
            self.post_signed(url, params)

    def post_signed(self, url: str, params: dict[str, str]) -> int:
        """POST form params to a webhook with Twilio's ``X-Twilio-Signature``."""
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        try:
            response = requests.post(
                url, data=params, headers={"X-Twilio-Signature": signature}, timeout=5
            )
        except requests.RequestException as exc:
            self.callback_errors.append(f"{url}: {exc}")
            return 0
        if response.status_code >= 400:
            self.callback_errors.append(f"{url}: {response.status_code}")
        return int(response.status_code)


def _error(code: int, message: str, status: int) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
