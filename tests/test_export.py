"""Her export: one JSON document with everything held about her, through the real API."""

from __future__ import annotations

import json

import pytest
import redis

from alerts.incidents import storage
from locator.core.clock import ManualClock
from tests.alerts_harness import build_district, config, consume, exit_event
from tests.conftest import Api, both_backends
from tests.privacy_harness import DEVICE, bind, walk


@pytest.fixture
def client(alerts_client: redis.Redis) -> redis.Redis:
    return alerts_client


async def test_the_export_holds_every_part_of_her_data_and_is_itself_logged(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    e = d.elder_id
    await bind(api, e)
    walk(client, clock, (0, 100, 250, 300), last_alarm="low_battery")
    sms = config(clock, channels=frozenset({"sms", "voice", "mqtt", "log"}))
    exit_event(client, e, clock)
    assert consume(client, sms) == 2
    incident_id = storage.open_incident_id(client, e)
    assert incident_id is not None

    r = await api.http.get(f"/api/v1/elders/{e}/export", headers=api.auth("guardian_a"))
    assert r.status_code == 200, r.text
    assert "attachment" in r.headers["content-disposition"]
    doc = json.loads(r.content)
    assert doc["record"]["name"] == "张阿婆" and doc["record"]["medical_notes"]
    assert {g["phone"] for g in doc["guardians"]} == {"+8613800138000", "+8613800138001"}
    assert doc["device"]["device_id"] == DEVICE
    assert [z["properties"]["kind"] for z in doc["zones"]] == ["safe"]
    assert doc["position"]["lat"] > 30
    assert len(doc["track"]["features"]) == 4
    assert "low_battery" in {ev["type"] for ev in doc["events"]}
    [incident] = doc["incidents"]
    assert incident["id"] == incident_id and incident["timeline"]
    assert doc["notices"], "the low-battery notice to her family"
    texts = [m for m in doc["messages"] if m["channel"] == "sms"]
    assert texts and all(m["text"] for m in texts)
    assert {m["incident_id"] for m in texts} >= {incident_id}
    # The one-tap link never reaches a stored text, so never an export.
    assert "/v/" not in json.dumps(doc["messages"]) and "?t=" not in json.dumps(doc)
    actions = [entry["action"] for entry in doc["access_log"]]
    assert actions[-1] == "export" and "record.create" in actions
    # ... and the export reads her data without logging each part as a separate read.
    assert "position.read" not in actions and "track.read" not in actions


@both_backends
async def test_only_her_guardian_or_an_admin_exports_her(api: Api) -> None:
    d = await build_district(api)
    url = f"/api/v1/elders/{d.elder_id}/export"
    for who, expected in (("admin", 200), ("dispatcher", 403), ("guardian_b", 403)):
        r = await api.http.get(url, headers=api.auth(who))
        assert r.status_code == expected, (who, r.text)
    assert (await api.http.get(url, headers=d.auth("pair1"))).status_code == 403
