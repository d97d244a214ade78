"""Trust at the notification edge: the one-tap link only in its SMS, webhooks acted on once,
a cancel by SMS confirmed with a code, no phone number on a timeline or the feed."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from alerts import keys as alerts_keys
from alerts.incidents import storage
from locator.core.clock import ManualClock
from tests.alerts_harness import build_district
from tests.conftest import Api
from tests.ingest_harness import wait_for
from tests.test_twilio import Stack, open_incident, people_phones, running_stack, sms_to


@pytest.fixture
def stack(redis: object, redis_url: str, clock: ManualClock, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(redis_url, clock, tmp_path) as running:
        yield running


LINK = re.compile(r"(http://\S+/v/(\d+)\?t=(\S+))")


def everything_stored(client: redis.Redis) -> str:
    """Every value under the service's prefix, as one text to search."""
    out: list[str] = []
    for key in client.scan_iter("hw:*", count=1000):
        kind = client.type(key)
        value: Any
        if kind == "string":
            value = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "set":
            value = client.smembers(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1)
        elif kind == "stream":
            value = client.xrange(key)
        else:
            value = ""
        out.append(f"{key} {value}")
    return "\n".join(out)


async def test_the_one_tap_link_is_only_in_the_sms_that_carries_it(
    api: Api, stack: Stack, capfd: pytest.CaptureFixture[str]
) -> None:
    d = await build_district(api)
    phones = await people_phones(api, d)
    incident_id = open_incident(stack, d)
    linked = ("pair1", "near200", "near400")
    wait_for(lambda: all(sms_to(stack, phones[n]) for n in linked))
    tokens = {}
    for name in linked:
        [sms] = sms_to(stack, phones[name])
        found = LINK.search(sms["Body"])
        assert found, sms["Body"]
        assert int(found.group(2)) == incident_id
        tokens[name] = found.group(3)
    # The link in the SMS works: it opens the volunteer's own session.
    page = httpx.get(LINK.search(sms_to(stack, phones["near200"])[0]["Body"]).group(1))  # type: ignore[union-attr]
    assert page.status_code == 200 and page.cookies.get("hw_session")
    wait_for(
        lambda: all(
            a["status"] not in ("queued", "sending") for a in stack.attempts(incident_id).values()
        )
    )

    # The family and dispatch read the log: "link sent" where the link was, no token.
    for who in ("guardian_a", "dispatcher"):
        for path in (f"/api/v1/notifications?incident_id={incident_id}", "/api/v1/notifications"):
            r = await api.http.get(path, headers=api.auth(who))
            assert r.status_code == 200, r.text
            assert "?t=" not in r.text and not any(t in r.text for t in tokens.values())
            alerts = [
                i
                for i in r.json()["items"]
                if i["template"] == "alert" and i["recipient"] == f"volunteer:{d.vid('near200')}"
            ]
            assert alerts and all("[链接已发送]" in i["text"] for i in alerts)
        r = await api.http.get(f"/api/v1/incidents/{incident_id}", headers=api.auth(who))
        assert r.status_code == 200 and "?t=" not in r.text
    # Nowhere in the store either: attempts (what MQTT and web push carry), the feed that SSE
    # and homeward/events/incidents relay, timelines.
    stored = everything_stored(stack.client)
    assert "?t=" not in stored and not any(t in stored for t in tokens.values())
    # Nor in any log line the workers and the app wrote.
    out, err = capfd.readouterr()
    assert not any(t in out + err for t in tokens.values())


def timeline(stack: Stack, elder_id: int, incident_id: int) -> list[dict[str, Any]]:
    raw = stack.client.lrange(alerts_keys.incident_timeline(elder_id, incident_id), 0, -1)
    return [json.loads(e) for e in raw]


async def test_a_replayed_webhook_is_acted_on_once(api: Api, stack: Stack) -> None:
    d = await build_district(api)
    phones = await people_phones(api, d)
    incident_id = open_incident(stack, d)
    accept = {"From": phones["pair1"], "Body": "1", "MessageSid": "SM" + "1" * 32}
    first = stack.webhook("/webhooks/twilio/sms", accept)
    assert first.status_code == 200 and "<Message>" in first.text
    assert storage.load(stack.client, incident_id).status == "acknowledged"
    before = timeline(stack, d.elder_id, incident_id)
    # The same signed request again (a replay, or Twilio retrying): 200, nothing done, and
    # no second reply SMS.
    again = stack.webhook("/webhooks/twilio/sms", accept)
    assert again.status_code == 200 and "<Message" not in again.text
    assert timeline(stack, d.elder_id, incident_id) == before
    # A keypress replayed (the call's TwiML URL names the attempt): the decline counts once,
    # the replay says and changes nothing.
    attempt = next(
        a
        for a, doc in stack.attempts(incident_id).items()
        if doc["recipient"] == f"volunteer:{d.vid('near200')}" and doc["channel"] == "sms"
    )
    path = f"/webhooks/twilio/voice?attempt={attempt}"
    press = {"CallSid": "CA" + "2" * 32, "Digits": "2"}
    declined = stack.webhook(path, press)
    assert "<Say" in declined.text
    assert storage.load(stack.client, incident_id).responders[d.vid("near200")]["state"] == (
        "declined"
    )
    before = timeline(stack, d.elder_id, incident_id)
    replayed = stack.webhook(path, press)
    assert replayed.status_code == 200 and "<Say" not in replayed.text
    assert timeline(stack, d.elder_id, incident_id) == before

    # A delivery receipt replayed is not counted twice (once the loopback's own receipts
    # are all in).
    def settled() -> bool:
        sms = [doc for doc in stack.attempts(incident_id).values() if doc["channel"] == "sms"]
        return all(doc["status"] not in ("queued", "sending") for doc in sms) and all(
            doc.get("delivery") for doc in sms if doc.get("provider_id")
        )

    wait_for(settled)
    sent, sid = next(
        (a, doc["provider_id"])
        for a, doc in stack.attempts(incident_id).items()
        if doc.get("provider_id") and doc["channel"] == "sms"
    )
    receipt = {"MessageSid": sid, "MessageStatus": "read"}
    status_path = f"/webhooks/twilio/status?attempt={sent}"
    counted = int(stack.client.hget(alerts_keys.NOTIFICATION_STATS, "sms:delivered") or 0)
    assert stack.webhook(status_path, receipt).json() == {"result": "read"}
    assert (
        int(stack.client.hget(alerts_keys.NOTIFICATION_STATS, "sms:delivered") or 0) == counted + 1
    )
    assert stack.webhook(status_path, receipt).json() == {"result": "duplicate"}
    assert (
        int(stack.client.hget(alerts_keys.NOTIFICATION_STATS, "sms:delivered") or 0) == counted + 1
    )


async def test_a_guardian_cancels_by_sms_only_with_the_code_sent_back(
    api: Api, stack: Stack
) -> None:
    d = await build_district(api)
    guardian = "+8613800138001"  # her second guardian, 王芳
    incident_id = open_incident(stack, d)
    asked = stack.webhook("/webhooks/twilio/sms", {"From": guardian, "Body": "取消"})
    confirm = re.search(r"回复 0 (\d{6}) 确认取消", asked.text)
    assert confirm, asked.text
    assert storage.load(stack.client, incident_id).status == "open"
    wrong = f"{(int(confirm[1]) + 1) % 900000 + 100000}"
    refused = stack.webhook("/webhooks/twilio/sms", {"From": guardian, "Body": f"0 {wrong}"})
    assert "未取消" in refused.text
    assert storage.load(stack.client, incident_id).status == "open"
    # Someone else's number cannot use her code.
    other = stack.webhook(
        "/webhooks/twilio/sms", {"From": "+8613800138000", "Body": f"0 {confirm[1]}"}
    )
    assert storage.load(stack.client, incident_id).status == "open", other.text
    done = stack.webhook("/webhooks/twilio/sms", {"From": guardian, "Body": f"0 {confirm[1]}"})
    assert "平安" in done.text
    closed = storage.load(stack.client, incident_id)
    assert closed.status == "resolved" and closed.fields["outcome"] == "false_alarm"
    # Used once: the same code again does nothing more.
    assert (
        "未取消"
        in stack.webhook("/webhooks/twilio/sms", {"From": guardian, "Body": f"0 {confirm[1]}"}).text
    )
    # The timeline and the feed name her by her place in the record, never by number.
    entries = timeline(stack, d.elder_id, incident_id)
    note = next(e for e in entries if e["type"] == "note")
    assert note["text"] == "guardian 1 says safe (SMS)" and note["actor"] == "guardian:1"
    feed = json.dumps(stack.client.xrange(alerts_keys.FEED), ensure_ascii=False)
    r = await api.http.get(f"/api/v1/incidents/{incident_id}", headers=api.auth("dispatcher"))
    for text in (json.dumps(entries, ensure_ascii=False), feed, r.text):
        assert "13800138001" not in text and "13800138000" not in text


async def test_guessing_the_cancel_code_burns_it(api: Api, stack: Stack) -> None:
    d = await build_district(api)
    guardian = "+8613800138000"
    incident_id = open_incident(stack, d)
    asked = stack.webhook("/webhooks/twilio/sms", {"From": guardian, "Body": "0"})
    confirm = re.search(r"回复 0 (\d{6})", asked.text)
    assert confirm
    wrong = f"{(int(confirm[1]) + 1) % 900000 + 100000}"
    for _ in range(5):
        stack.webhook("/webhooks/twilio/sms", {"From": guardian, "Body": f"0 {wrong}"})
    late = stack.webhook("/webhooks/twilio/sms", {"From": guardian, "Body": f"0 {confirm[1]}"})
    assert "未取消" in late.text
    assert storage.load(stack.client, incident_id).status == "open"
