"""Web push cannot be turned against the service: endpoints only https on public hosts, a few
per volunteer, and a push service that answers byte by byte holds up no SMS."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from alerts import keys as alerts_keys
from alerts.notify.channels import Message
from alerts.notify.webpush import WebPush
from locator.core.auth import Role
from locator.core.clock import ManualClock
from tests.alerts_harness import build_district
from tests.conftest import Api
from tests.factories import volunteer_body
from tests.ingest_harness import wait_for
from tests.test_twilio import (
    Stack,
    _browser_keys,
    _vapid_key,
    open_incident,
    people_phones,
    running_stack,
    sms_to,
)


class TricklingPushService:
    """Takes the request, then answers one byte every 0.2 s, for ever."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        answer = b"HTTP/1.1 201 Created\r\n" + b"X-Slow: " + b"a" * 10_000
        with conn:
            try:
                conn.recv(65536)
                for byte in answer:
                    if self.stopped.wait(0.2):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                return

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


@pytest.fixture
def trickling() -> Iterator[TricklingPushService]:
    service = TricklingPushService()
    yield service
    service.close()


@pytest.fixture
def stack(redis: object, redis_url: str, clock: ManualClock, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(redis_url, clock, tmp_path) as running:
        yield running


def store_subscription(client: redis.Redis, volunteer_id: int, endpoint: str) -> None:
    """A loopback subscription, stored as the API would store a public one."""
    sub = {"endpoint": endpoint, "keys": _browser_keys()}
    client.hset(alerts_keys.push_subscriptions(volunteer_id), endpoint, json.dumps(sub))


async def _volunteer(api: Api) -> tuple[int, dict[str, str]]:
    r = await api.http.post("/api/v1/volunteers", json=volunteer_body(1), headers=api.auth("admin"))
    assert r.status_code == 201, r.text
    vid = int(r.json()["id"])
    return vid, {"Authorization": f"Bearer {await api.token(Role.VOLUNTEER, str(vid))}"}


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://push.example.com/send/1",  # not https
        "https://127.0.0.1/send/1",
        "https://10.1.2.3/send/1",
        "https://192.168.1.1/send/1",
        "https://169.254.169.254/latest/meta-data",  # a cloud's metadata service
        "https://100.64.0.1/send/1",  # carrier-grade NAT
        "https://240.0.0.1/send/1",  # reserved
        "https://[::1]/send/1",
        "https://[fd00::1]/send/1",
        "https://[::ffff:127.0.0.1]/send/1",
        "https://2130706433/send/1",  # 127.0.0.1 as one number
        "https://0x7f.1/send/1",
        "https://localhost/send/1",
        "https://redis/send/1",  # a bare name on the local network
        "https://printer.local/send/1",
        "https://metadata.google.internal/send/1",
    ],
)
async def test_push_endpoints_must_be_https_on_a_public_host(api: Api, endpoint: str) -> None:
    vid, auth = await _volunteer(api)
    r = await api.http.post(
        f"/api/v1/volunteers/{vid}/push-subscriptions",
        json={"endpoint": endpoint, "keys": _browser_keys()},
        headers=auth,
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][-1] == "endpoint"
    assert not await api.redis.exists(alerts_keys.push_subscriptions(vid))


async def test_a_volunteer_keeps_at_most_five_subscriptions_the_oldest_gives_way(
    api: Api, clock: ManualClock
) -> None:
    vid, auth = await _volunteer(api)
    url = f"/api/v1/volunteers/{vid}/push-subscriptions"
    endpoints = [f"https://fcm.googleapis.com/fcm/send/browser-{n}" for n in range(8)]
    replaced = []
    for endpoint in endpoints:
        clock.advance(60)
        r = await api.http.post(
            url, json={"endpoint": endpoint, "keys": _browser_keys()}, headers=auth
        )
        assert r.status_code == 201, r.text
        replaced.append(r.json()["replaced"])
    assert replaced == [None] * 5 + endpoints[:3]
    kept = await api.redis.hkeys(alerts_keys.push_subscriptions(vid))
    assert sorted(kept) == sorted(endpoints[3:])
    # The same browser subscribing again is an update, not one more.
    clock.advance(60)
    r = await api.http.post(
        url, json={"endpoint": endpoints[3], "keys": _browser_keys()}, headers=auth
    )
    assert r.json()["replaced"] is None
    assert await api.redis.hlen(alerts_keys.push_subscriptions(vid)) == 5


def test_a_push_service_trickling_its_answer_is_cut_off_at_the_deadline(
    alerts_client: redis.Redis, trickling: TricklingPushService
) -> None:
    # Loopback is refused at the API; the channel itself is called here.
    for n in range(3):
        store_subscription(alerts_client, 1, f"{trickling.url}/push/{n}")
    channel = WebPush(alerts_client, private_key=_vapid_key(), subject="mailto:ops@homeward.test")
    message = Message(
        attempt_id="1.i1.t0.volunteer:1.webpush",
        recipient="volunteer:1",
        phone=None,
        template="alert",
        text="test",
        data={"incident_id": 1},
    )
    outcome: list[object] = []
    started = time.monotonic()
    worker = threading.Thread(target=lambda: outcome.append(channel.send(message)), daemon=True)
    worker.start()
    worker.join(timeout=20)
    elapsed = time.monotonic() - started
    assert outcome, "web push still waiting on a push service after 20 s"
    # One deadline for all three endpoints together, not one per endpoint or per read.
    assert elapsed < 5 + 2, elapsed
    assert trickling.connections == 3
    [result] = outcome
    assert result.outcome == "transient" and "no answer within" in result.detail  # type: ignore[attr-defined]


async def test_a_slow_push_service_holds_up_no_sms(
    api: Api, stack: Stack, trickling: TricklingPushService
) -> None:
    d = await build_district(api)
    phones = await people_phones(api, d)
    # Every volunteer has a browser whose push service answers byte by byte.
    for vid in d.volunteers.values():
        store_subscription(stack.client, vid, f"{trickling.url}/push/{vid}")
    started = time.monotonic()
    open_incident(stack, d)
    everyone = ("pair1", "pair2", "near200", "near400", "near600")
    wait_for(lambda: all(sms_to(stack, phones[n]) for n in everyone), timeout=4)
    elapsed = time.monotonic() - started
    assert elapsed < 3, f"the SMS waited {elapsed:.1f} s behind web push"
    assert trickling.connections >= 1  # the pushes were under way meanwhile
