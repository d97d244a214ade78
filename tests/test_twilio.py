"""SMS, voice and web push through the real clients: the official twilio library against a
Twilio-compatible server on loopback, pywebpush against a push service on loopback, and the
real app on a loopback port receiving the signed webhooks."""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from alerts import keys as alerts_keys
from alerts.incidents import storage
from alerts.incidents.config import config_from
from alerts.notify import webpush
from locator.alerts_loop import start_workers
from locator.app import create_app
from locator.core.clock import ManualClock
from locator.core.redis import sync_client
from locator.core.settings import Settings, load_settings
from locator.twilio_loopback import TwilioLoopback
from tests.alerts_harness import District, build_district, exit_event
from tests.browser import LiveServer, free_port
from tests.conftest import Api
from tests.ingest_harness import wait_for

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "loopback-auth-token-0123456789ab"
FROM = "+15005550006"


@dataclass
class Stack:
    url: str
    twilio: TwilioLoopback
    client: redis.Redis
    clock: ManualClock
    settings: Settings

    def webhook(self, path: str, params: dict[str, str]) -> httpx.Response:
        """POST a webhook the way Twilio does (signed over PUBLIC_URL + path).

        Every SMS Twilio forwards has its own MessageSid; one is made up when not given.
        """
        from twilio.request_validator import RequestValidator

        if path.startswith("/webhooks/twilio/sms") and "MessageSid" not in params:
            params = {**params, "MessageSid": "SM" + uuid.uuid4().hex}

        url = self.url + path
        signature = RequestValidator(TOKEN).compute_signature(url, params)
        return httpx.post(url, data=params, headers={"X-Twilio-Signature": signature})

    def attempts(self, incident_id: int) -> dict[str, dict[str, str]]:
        snap = storage.load(self.client, incident_id)
        ids = self.client.zrange(alerts_keys.incident_attempts(snap.elder_id, incident_id), 0, -1)
        return {str(a): self.client.hgetall(alerts_keys.attempt(str(a))) for a in ids}  # type: ignore[misc]


@pytest.fixture
def stack(
    redis: object, redis_url: str, mqtt_url: str, clock: ManualClock, tmp_path: Path
) -> Iterator[Stack]:
    with running_stack(redis_url, clock, tmp_path) as running:
        yield running


@contextmanager
def running_stack(redis_url: str, clock: ManualClock, tmp_path: Path) -> Iterator[Stack]:
    """The app on a loopback port, the alerts workers and a Twilio-compatible server."""
    twilio = TwilioLoopback(account_sid=SID, auth_token=TOKEN).start()
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    settings = load_settings(
        data_dir=tmp_path,
        public_url=public,
        twilio_account_sid=SID,
        twilio_auth_token=TOKEN,
        twilio_from=FROM,
        twilio_base_url=twilio.url,
        vapid_private_key=_vapid_key(),
        vapid_subject="mailto:ops@homeward.test",
    )
    # No MQTT on either side: these volunteers are reached by SMS, voice and web push only.
    app = create_app(settings, redis_url=redis_url, mqtt_url=None, clock=clock)
    live = LiveServer(app, port=port).__enter__()
    client = sync_client(redis_url, process="test")
    stop = threading.Event()
    cfg = config_from(settings, clock=clock, mqtt_url=None)  # SMS/voice/web push, no MQTT
    workers = start_workers(client, cfg, publisher=None, stop=stop, data_dir=tmp_path)
    try:
        yield Stack(public, twilio, client, clock, settings)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=5)
        live.__exit__(None, None, None)
        twilio.stop()
        client.close()


def _vapid_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from py_vapid import Vapid02, b64urlencode

    vapid = Vapid02()
    vapid.generate_keys()
    der = vapid.private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return str(b64urlencode(der))


def phone(d: District, name: str, api_people: dict[str, str]) -> str:
    return api_people[name]


async def people_phones(api: Api, d: District) -> dict[str, str]:
    out = {}
    for name, vid in d.volunteers.items():
        r = await api.http.get(f"/api/v1/volunteers/{vid}", headers=api.auth("admin"))
        out[name] = r.json()["phone"]
    return out


def open_incident(stack: Stack, d: District) -> int:
    exit_event(stack.client, d.elder_id, stack.clock)
    wait_for(lambda: storage.open_incident_id(stack.client, d.elder_id) is not None)
    incident_id = storage.open_incident_id(stack.client, d.elder_id)
    assert incident_id is not None
    return incident_id


def sms_to(stack: Stack, number: str) -> list[dict[str, str]]:
    return [m.form for m in stack.twilio.messages() if m.form["To"] == number]


async def test_sms_to_both_paired_volunteers_and_accept_by_reply(api: Api, stack: Stack) -> None:
    d = await build_district(api)
    phones = await people_phones(api, d)
    started = time.monotonic()
    incident_id = open_incident(stack, d)
    wait_for(lambda: bool(sms_to(stack, phones["pair1"])) and bool(sms_to(stack, phones["pair2"])))
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"the SMS reached the provider {elapsed:.2f} s after the exit"
    code = storage.load(stack.client, incident_id).fields["code"]
    [sms] = sms_to(stack, phones["pair1"])
    # What Twilio received: the real client's form body.
    assert sms["From"] == FROM
    assert sms["StatusCallback"].startswith(f"{stack.url}/webhooks/twilio/status?attempt=")
    body = sms["Body"]
    assert "张阿婆" in body and code in body and "回1" in body
    assert re.search(r"距家\d+米北", body), body  # a place hint: 300 m north of home
    link = re.search(r"(http://\S+/v/\d+\?t=\S+)", body)
    assert link, body
    assert len(body) <= 134, f"{len(body)} characters: more than two concatenated SMS parts"
    # The guardians get their own message; the dispatcher is not paged before the deadline.
    wait_for(lambda: bool(sms_to(stack, "+8613800138000")))
    assert "走失" in sms_to(stack, "+8613800138000")[0]["Body"]
    # Delivery receipts arrive signed and mark the attempts delivered.
    wait_for(
        lambda: any(a.get("status") == "delivered" for a in stack.attempts(incident_id).values())
    )
    # Accept by replying "1" (one open alert: no code needed).
    r = stack.webhook("/webhooks/twilio/sms", {"From": phones["pair1"], "Body": "1"})
    assert r.status_code == 200 and "<Message>" in r.text and code in r.text
    incident = storage.load(stack.client, incident_id)
    assert incident.status == "acknowledged"
    timeline = [
        json.loads(e)
        for e in stack.client.lrange(alerts_keys.incident_timeline(d.elder_id, incident_id), 0, -1)
    ]
    accepted = [e for e in timeline if e["type"] == "accepted"]
    assert accepted[0]["channel"] == "sms"
    # The others are stood down by SMS.
    wait_for(lambda: any("待命" in m["Body"] for m in sms_to(stack, phones["pair2"])))


async def test_several_alerts_need_the_code(api: Api, stack: Stack) -> None:
    d = await build_district(api)
    phones = await people_phones(api, d)
    first = open_incident(stack, d)
    # A second elder paired with the same volunteer wanders too.
    other = await api.http.post(
        "/api/v1/elders",
        json={
            "name": "王阿公",
            "home": {"lat": 30.52, "lon": 120.69},
            "guardians": [{"name": "王强", "phone": "+8613800138009", "relation": "son"}],
        },
        headers=api.auth("admin"),
    )
    other_id = other.json()["id"]
    await api.http.put(
        f"/api/v1/elders/{other_id}/pair",
        json={"volunteer_ids": [d.vid("pair1")]},
        headers=api.auth("admin"),
    )
    exit_event(stack.client, other_id, stack.clock)
    wait_for(lambda: storage.open_incident_id(stack.client, other_id) is not None)
    second = storage.open_incident_id(stack.client, other_id)
    assert second is not None
    codes = {i: storage.load(stack.client, i).fields["code"] for i in (first, second)}
    r = stack.webhook("/webhooks/twilio/sms", {"From": phones["pair1"], "Body": "是"})
    assert codes[first] in r.text and codes[second] in r.text  # which one? it says the codes
    assert storage.load(stack.client, first).status == "open"
    r = stack.webhook(
        "/webhooks/twilio/sms", {"From": phones["pair1"], "Body": f"1 {codes[second]}"}
    )
    assert r.status_code == 200
    assert storage.load(stack.client, second).status == "acknowledged"
    assert storage.load(stack.client, first).status == "open"
    r = stack.webhook("/webhooks/twilio/sms", {"From": phones["pair1"], "Body": "2"})
    assert storage.load(stack.client, first).responders[d.vid("pair1")]["state"] == "declined"
    # The guardian says she is safe (and confirms with the code she is sent back): a note
    # dispatch can read, then closed as a false alarm.
    r = stack.webhook("/webhooks/twilio/sms", {"From": "+8613800138000", "Body": "0"})
    assert r.status_code == 200
    confirm = re.search(r"回复 0 (\d{6})", r.text)
    assert confirm and storage.load(stack.client, first).status == "open", r.text
    r = stack.webhook("/webhooks/twilio/sms", {"From": "+8613800138000", "Body": f"0 {confirm[1]}"})
    assert r.status_code == 200
    closed = storage.load(stack.client, first)
    assert closed.status == "resolved" and closed.fields["outcome"] == "false_alarm"
    notes = [
        json.loads(e)["type"]
        for e in stack.client.lrange(alerts_keys.incident_timeline(d.elder_id, first), 0, -1)
    ]
    assert notes[-2:] == ["note", "resolved"]


async def test_signatures_are_required(api: Api, stack: Stack) -> None:
    for path in (
        "/webhooks/twilio/sms",
        "/webhooks/twilio/voice?attempt=x",
        "/webhooks/twilio/status?attempt=x",
    ):
        assert httpx.post(stack.url + path, data={"Body": "1"}).status_code == 403
        bad = httpx.post(
            stack.url + path,
            data={"Body": "1"},
            headers={"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"},
        )
        assert bad.status_code == 403
    # Signed for another URL (a replay against a different path) is refused too.
    from twilio.request_validator import RequestValidator

    params = {"From": "+8613900000001", "Body": "1"}
    other = RequestValidator(TOKEN).compute_signature(stack.url + "/webhooks/twilio/status", params)
    r = httpx.post(
        stack.url + "/webhooks/twilio/sms", data=params, headers={"X-Twilio-Signature": other}
    )
    assert r.status_code == 403


async def test_stopped_number_falls_back_to_voice_and_keypress_declines(
    api: Api, stack: Stack
) -> None:
    d = await build_district(api)
    phones = await people_phones(api, d)
    stack.twilio.behaviour.unsubscribed.add(phones["pair2"])
    stack.twilio.behaviour.invalid.add(phones["near400"])
    incident_id = open_incident(stack, d)
    calls = lambda: [c.form for c in stack.twilio.calls()]  # noqa: E731
    wait_for(lambda: {c["To"] for c in calls()} >= {phones["pair2"], phones["near400"]})
    sms_attempt = next(
        a
        for a in stack.attempts(incident_id).values()
        if a["recipient"] == f"volunteer:{d.vid('pair2')}" and a["channel"] == "sms"
    )
    assert sms_attempt["status"] == "failed" and "21610" in sms_attempt["error"]
    [call] = [c for c in calls() if c["To"] == phones["pair2"]]
    assert call["Url"].startswith(f"{stack.url}/webhooks/twilio/voice?attempt=")
    # Twilio fetches the TwiML: the alert read in Mandarin, then the keypad.
    path = call["Url"][len(stack.url) :]
    twiml = stack.webhook(path, {"CallSid": "CA1", "From": FROM, "To": phones["pair2"]})
    assert twiml.status_code == 200
    assert "<Gather" in twiml.text and 'language="zh-CN"' in twiml.text
    assert "按1" in twiml.text and "张阿婆" in twiml.text
    # 5 repeats, 2 declines.
    again = stack.webhook(path, {"CallSid": "CA1", "Digits": "5"})
    assert "<Gather" in again.text
    declined = stack.webhook(path, {"CallSid": "CA1", "Digits": "2"})
    assert "<Hangup" in declined.text
    snap = storage.load(stack.client, incident_id)
    assert snap.responders[d.vid("pair2")]["state"] == "declined"
    # No key pressed: counted as no answer on the timeline, nothing else changes.
    [call2] = [c for c in calls() if c["To"] == phones["near400"]]
    path2 = call2["Url"][len(stack.url) :] + "&noinput=1"
    assert "<Hangup" in stack.webhook(path2, {"CallSid": "CA2"}).text
    entries = [
        json.loads(e)
        for e in stack.client.lrange(alerts_keys.incident_timeline(d.elder_id, incident_id), 0, -1)
    ]
    assert {"type": "no_answer", "channel": "voice"}.items() <= entries[-1].items()


async def test_undelivered_status_moves_to_voice_and_unknown_fate_is_not_resent(
    api: Api, stack: Stack
) -> None:
    d = await build_district(api)
    phones = await people_phones(api, d)
    stack.twilio.behaviour.undeliverable.add(phones["near200"])
    stack.twilio.behaviour.hang_up.add(phones["near600"])
    stack.twilio.behaviour.rate_limited.add(phones["pair1"])
    incident_id = open_incident(stack, d)
    wait_for(
        lambda: (
            {c.form["To"] for c in stack.twilio.calls()} >= {phones["near200"], phones["near600"]}
        ),
        timeout=10,
    )
    by_recipient: dict[str, list[dict[str, str]]] = {}
    for a in stack.attempts(incident_id).values():
        by_recipient.setdefault(a["recipient"], []).append(a)
    undelivered = [
        a for a in by_recipient[f"volunteer:{d.vid('near200')}"] if a["channel"] == "sms"
    ]
    assert undelivered[0]["status"] == "undelivered" and undelivered[0]["delivery"] == "undelivered"
    # The SMS was taken but Twilio's answer never came: one SMS request, then voice.
    assert len(sms_to(stack, phones["near600"])) == 1
    hung = [a for a in by_recipient[f"volunteer:{d.vid('near600')}"] if a["channel"] == "sms"]
    assert hung[0]["status"] == "unknown"
    # 20429 is retried later on the same channel, not failed over.
    limited = [a for a in by_recipient[f"volunteer:{d.vid('pair1')}"] if a["channel"] == "sms"]
    assert limited[0]["status"] == "retry" and "20429" in limited[0]["error"]


async def test_link_page_shows_but_only_its_button_accepts_and_links_expire(
    api: Api, stack: Stack
) -> None:
    d = await build_district(api)
    phones = await people_phones(api, d)
    incident_id = open_incident(stack, d)
    wait_for(lambda: bool(sms_to(stack, phones["near200"])))
    link = re.search(r"(http://\S+/v/\d+\?t=\S+)", sms_to(stack, phones["near200"])[0]["Body"])
    assert link
    page = httpx.get(link.group(1))
    # The volunteer page (drawn by its script from the API: tests/test_pages_people.py) with
    # a session for the volunteer the link names, and nothing accepted.
    assert page.status_code == 200 and "/static/volunteer.js" in page.text
    assert "<form method='post'" in page.text  # inside <noscript>: answers without JavaScript
    cookie = page.cookies.get("hw_session")
    assert cookie
    seen = httpx.get(f"{stack.url}/api/v1/incidents/{incident_id}", cookies={"hw_session": cookie})
    assert seen.status_code == 200 and seen.json()["elder_name"] == "张阿婆"
    me = httpx.get(f"{stack.url}/api/v1/session", cookies={"hw_session": cookie}).json()
    assert me["volunteer_id"] == d.vid("near200")
    httpx.get(link.group(1))  # a link scanner opening it again
    assert (
        storage.load(stack.client, incident_id).responders[d.vid("near200")]["state"] == "notified"
    )
    token = link.group(1).split("t=")[1]
    forged = httpx.get(link.group(1).replace(token, token[:-2] + "xx"))
    assert forged.status_code == 403 and "hw_session" not in forged.cookies
    r = httpx.post(f"{stack.url}/v/{incident_id}/answer", data={"t": token, "action": "ack"})
    assert r.status_code == 200 and "已接单" in r.text
    assert storage.load(stack.client, incident_id).status == "acknowledged"
    stack.clock.advance(6 * 3600 + 1)
    assert httpx.get(link.group(1)).status_code == 410


class PushService:
    """A web push service on loopback: records what pywebpush posts, answers per path."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.received.append(
                    {
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    }
                )
                self.send_response(410 if self.path.endswith("/gone") else 201)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def _browser_keys() -> dict[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    enc = lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")  # noqa: E731
    return {"p256dh": enc(point), "auth": enc(os.urandom(16))}


async def test_web_push_is_an_extra_and_gone_subscriptions_are_dropped(
    api: Api, stack: Stack
) -> None:
    d = await build_district(api)
    push = PushService()
    try:
        vid = d.vid("pair1")
        url = f"/api/v1/volunteers/{vid}/push-subscriptions"
        # A loopback push service: the API refuses it (tests/test_push_limits.py), so these
        # are stored as the API stores public ones.
        for endpoint in (f"{push.url}/push/ok", f"{push.url}/push/gone"):
            sub = {"endpoint": endpoint, "keys": _browser_keys()}
            webpush.subscribe(stack.client, volunteer_id=vid, subscription=sub, now=0.0)
        other = await api.http.post(
            url,
            json={"endpoint": "https://fcm.googleapis.com/fcm/send/x", "keys": _browser_keys()},
            headers=d.auth("pair2"),
        )
        assert other.status_code == 403
        bad = await api.http.post(
            url, json={"endpoint": "ftp://x", "keys": _browser_keys()}, headers=d.auth("pair1")
        )
        assert bad.status_code == 422 and "endpoint" in bad.text
        incident_id = open_incident(stack, d)
        wait_for(lambda: len(push.received) >= 2)
        sent = push.received[0]
        assert sent["headers"]["content-encoding"] == "aes128gcm"
        assert sent["headers"]["authorization"].startswith("vapid t=")
        assert int(sent["headers"]["ttl"]) > 0
        assert len(sent["body"]) > 100  # encrypted, not the plain text
        wait_for(lambda: stack.client.hlen(alerts_keys.push_subscriptions(vid)) == 1)
        push_attempt = next(
            a
            for a in stack.attempts(incident_id).values()
            if a["channel"] == "webpush" and a["recipient"] == f"volunteer:{vid}"
        )
        assert push_attempt["status"] == "sent" and push_attempt["extra"] == "1"
        # The SMS went out regardless: web push never replaces the guaranteed chain.
        phones = await people_phones(api, d)
        assert sms_to(stack, phones["pair1"])
    finally:
        push.server.shutdown()


def test_twilio_unreachable_is_retried_but_a_lost_answer_is_not() -> None:
    """Refused before sending: transient (retried). Sent, then no answer: unknown fate."""
    from alerts.notify.channels import Message
    from alerts.notify.twilio import TwilioSms, make_client

    message = Message(
        attempt_id="1.i1.t0.volunteer:1.sms",
        recipient="volunteer:1",
        phone="+8613800000001",
        template="alert",
        text="test",
        data={},
    )
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    refused = TwilioSms(
        make_client(account_sid=SID, auth_token=TOKEN, base_url=closed), from_=FROM, public_url=None
    ).send(message)
    assert refused.outcome == "transient" and "unreachable" in refused.detail
    twilio = TwilioLoopback(account_sid=SID, auth_token=TOKEN).start()
    try:
        twilio.behaviour.hang_up.add(message.phone or "")
        lost = TwilioSms(
            make_client(account_sid=SID, auth_token=TOKEN, base_url=twilio.url),
            from_=FROM,
            public_url=None,
        ).send(message)
        assert lost.outcome == "unknown"
        assert len(twilio.messages()) == 1  # it was taken: never resend on this channel
    finally:
        twilio.stop()
