"""Trust at the notification edge: the one-tap link only in its SMS, webhooks acted on once,
a cancel by SMS confirmed with a code, no phone number on a timeline or the feed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

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
