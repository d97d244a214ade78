"""Drills: the real ladder with 演练-first texts through the real alerts workers and the
Twilio-compatible server, a real exit during a drill opening a real incident at once, the
family told or not, a scheduled drill fired by the ticker, and the report keeping both apart."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis

from alerts import keys as alerts_keys
from alerts.incidents import drills, storage
from alerts.notify import messages
from locator import watchdog
from locator.core.clock import ManualClock
from locator.ticker import Ticker
from tests.alerts_harness import build_district, config, exit_event
from tests.conftest import Api
from tests.ingest_harness import wait_for
from tests.test_twilio import Stack, people_phones, running_stack, sms_to

SON, DAUGHTER = "+8613800138000", "+8613800138001"


def _post(
    stack: Stack, api: Api, body: dict[str, object], who: str = "dispatcher"
) -> httpx.Response:
    return httpx.post(f"{stack.url}/api/v1/incidents", json=body, headers=api.auth(who))


def _get(stack: Stack, api: Api, path: str, who: str = "dispatcher") -> httpx.Response:
    return httpx.get(f"{stack.url}{path}", headers=api.auth(who))


@pytest.fixture
def stack(
    redis: object, redis_url: str, mqtt_url: str, clock: ManualClock, tmp_path: Path
) -> object:
    with running_stack(redis_url, clock, tmp_path) as running:
        yield running


async def test_drill_ladder_then_a_real_exit_opens_a_real_incident(api: Api, stack: Stack) -> None:
    d = await build_district(api)
    phones = await people_phones(api, d)
    r = _post(stack, api, {"elder_id": d.elder_id, "drill": True, "note": "夜间演练"})
    assert r.status_code == 201, r.text
    drill = r.json()
    assert drill["drill"] is True and drill["drill_announced"] is True
    drill_id = drill["id"]
    # Her open-incident pointer stays free: a real alarm must not join the drill.
    assert storage.open_incident_id(stack.client, d.elder_id) is None
    assert drills.drill_id(stack.client, d.elder_id) == drill_id
    wait_for(
        lambda: bool(sms_to(stack, phones["pair1"])) and bool(sms_to(stack, phones["near200"]))
    )
    # Announced, DRILL_NOTIFY_FAMILY off (default): the family hears of it once, marked.
    wait_for(lambda: bool(sms_to(stack, SON)) and bool(sms_to(stack, DAUGHTER)))
    family = sms_to(stack, SON) + sms_to(stack, DAUGHTER)
    assert all(m["Body"].startswith("【演练】") and "演练" in m["Body"][4:] for m in family), family
    drill_attempts = stack.attempts(drill_id)
    assert drill_attempts and not [
        a for a in drill_attempts.values() if a["recipient"].startswith("guardian")
    ], "the drill's ladder paged the family"
    # Every text the drill sent says 演练 first and still fits two SMS parts with its link.
    sent = [m.form["Body"] for m in stack.twilio.messages()]
    assert sent and all(body.startswith("【演练】") for body in sent), sent
    alert = sms_to(stack, phones["pair1"])[0]["Body"]
    assert "http" in alert and messages.sms_fits(alert), alert
    assert all(a["text"].startswith("【演练】") for a in drill_attempts.values())

    # A volunteer answers as they would: "1" by SMS, 45 s after the page.
    stack.clock.advance(45)
    reply = stack.webhook("/webhooks/twilio/sms", {"From": phones["pair1"], "Body": "1"})
    assert reply.status_code == 200 and "<Message>【演练】" in reply.text, reply.text
    assert storage.load(stack.client, drill_id).status == "acknowledged"

    # A real exit during the drill: a real incident opens at once, its texts unmarked.
    before = len(stack.twilio.messages())
    exit_event(stack.client, d.elder_id, stack.clock)
    wait_for(lambda: storage.open_incident_id(stack.client, d.elder_id) is not None)
    real_id = storage.open_incident_id(stack.client, d.elder_id)
    assert real_id is not None and real_id != drill_id
    real_code = storage.load(stack.client, real_id).fields["code"]
    wait_for(lambda: any(real_code in m["Body"] for m in sms_to(stack, phones["pair2"])))
    real_texts = [
        m.form["Body"] for m in stack.twilio.messages()[before:] if real_code in m.form["Body"]
    ]
    assert real_texts and all(body.startswith("【爱回家】") for body in real_texts), real_texts
    assert not any("演练" in a["text"] for a in stack.attempts(real_id).values())
    # The family is paged for the real one, as always.
    wait_for(lambda: any("走失" in m["Body"] for m in sms_to(stack, SON)))
    # The drill runs on untouched.
    still = storage.load(stack.client, drill_id)
    assert still.status == "acknowledged" and drills.drill_id(stack.client, d.elder_id) == drill_id

    # The report keeps them apart; the drill's shows who answered and how fast.
    real = _get(stack, api, "/api/v1/reports/sla").json()
    assert [row["incident_id"] for row in real["rows"]] == [real_id]
    assert real["rows"][0]["drill"] is False
    practice = _get(stack, api, "/api/v1/reports/sla?drill=true").json()
    assert [row["incident_id"] for row in practice["rows"]] == [drill_id]
    assert practice["rows"][0]["drill"] is True and practice["rows"][0]["respond_s"] == 45.0
    pair1 = next(v for v in practice["by_volunteer"] if v["volunteer_id"] == d.vid("pair1"))
    assert (pair1["alerted"], pair1["answered"], pair1["accept_p50_s"]) == (1, 1, 45.0)
    near = next(v for v in practice["by_volunteer"] if v["volunteer_id"] == d.vid("near200"))
    assert (near["alerted"], near["answered"], near["accept_p50_s"]) == (1, 0, None)
    listed = _get(stack, api, "/api/v1/incidents?drill=true").json()["items"]
    assert [i["id"] for i in listed] == [drill_id]
    # The watchdog and metrics count the drill apart from real incidents.
    states = watchdog.assess(stack.client, now=stack.clock.time()).incidents_by_sla
    assert states["drill"] == 1 and states["awaiting_response"] == 1


async def test_unannounced_drill_is_staffs_alone(api: Api, stack: Stack) -> None:
    d = await build_district(api)
    phones = await people_phones(api, d)
    body = {"elder_id": d.elder_id, "drill": True, "announced": False}
    assert _post(stack, api, body, who="guardian_a").status_code == 403
    r = _post(stack, api, body)
    assert r.status_code == 201, r.text
    drill_id = r.json()["id"]
    assert r.json()["drill_announced"] is False
    wait_for(lambda: bool(sms_to(stack, phones["pair1"])))
    assert sms_to(stack, phones["pair1"])[0]["Body"].startswith("【演练】")
    # The family gets nothing and does not see it; staff do.
    assert not [a for a in stack.attempts(drill_id).values() if "guardian" in a["recipient"]]
    assert stack.client.llen(alerts_keys.elder_notices(d.elder_id)) == 0
    assert _get(stack, api, f"/api/v1/incidents/{drill_id}", who="guardian_a").status_code == 403
    mine = _get(stack, api, "/api/v1/incidents?status=all", who="guardian_a").json()["items"]
    assert drill_id not in [i["id"] for i in mine]
    assert _get(stack, api, f"/api/v1/incidents/{drill_id}").json()["drill"] is True
    # Its feed entries say drill and unannounced: the family's live stream skips them.
    entries = [
        f for _, f in stack.client.xrange(alerts_keys.FEED) if f["incident_id"] == str(drill_id)
    ]
    assert entries and all(json.loads(f["data"])["drill"] for f in entries)
    assert not any(drills.family_hears(f["data"]) for f in entries)
    # One drill at a time for her.
    assert _post(stack, api, {"elder_id": d.elder_id, "drill": True}).status_code == 409
    assert not sms_to(stack, SON)


@pytest.fixture
def family_stack(
    redis: object,
    redis_url: str,
    mqtt_url: str,
    clock: ManualClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> object:
    monkeypatch.setenv("HOMEWARD_DRILL_NOTIFY_FAMILY", "true")
    with running_stack(redis_url, clock, tmp_path) as running:
        yield running


async def test_drill_notify_family_pages_the_family_marked(api: Api, family_stack: Stack) -> None:
    stack = family_stack
    d = await build_district(api)
    r = _post(stack, api, {"elder_id": d.elder_id, "drill": True})
    assert r.status_code == 201, r.text
    wait_for(lambda: len(sms_to(stack, SON)) >= 2)  # the advance notice and the ladder's
    bodies = [m["Body"] for m in sms_to(stack, SON)]
    assert all(b.startswith("【演练】") for b in bodies), bodies
    assert any("可能走失" in b for b in bodies), bodies


async def test_scheduled_drill_fires_at_its_time(
    api: Api, alerts_client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    start = datetime.fromtimestamp(clock.time(), tz=UTC) + timedelta(minutes=10)
    body = {"elder_id": d.elder_id, "drill": True, "start_at": start.isoformat()}
    r = await api.http.post("/api/v1/incidents", json=body, headers=api.auth("dispatcher"))
    assert r.status_code == 202, r.text
    assert r.json()["drill"] is True and r.json()["job"].startswith("drill|")
    assert drills.drill_id(alerts_client, d.elder_id) is None
    # Announced: the family's notice names the time, before anything starts.
    [notice] = [
        json.loads(n) for n in alerts_client.lrange(alerts_keys.elder_notices(d.elder_id), 0, -1)
    ]
    assert notice["type"] == "drill_notice" and notice["text"].startswith("【演练】")
    ticker = Ticker(alerts_client, clock=clock, offline_after_s=1200, alerts=config(clock))
    clock.advance(599)
    assert not [j for j, _ in ticker.run_once() if j.kind == "drill"]
    assert drills.drill_id(alerts_client, d.elder_id) is None
    clock.advance(2)
    ran = [(j.kind, result) for j, result in ticker.run_once() if j.kind == "drill"]
    assert ran == [("drill", "opened")]
    drill_id = drills.drill_id(alerts_client, d.elder_id)
    assert drill_id is not None
    snap = storage.load(alerts_client, drill_id)
    assert snap.drill and snap.t0 == clock.time() and snap.status == "open"
    assert float(snap.fields["drill_scheduled_for"]) == start.timestamp()
    assert storage.open_incident_id(alerts_client, d.elder_id) is None
    # Its ladder runs on the same timers: the voice step is the drill's own.
    clock.advance(90)
    steps = [(j.kind, result) for j, result in ticker.run_once()]
    assert ("sla", "voice") in steps, steps


async def test_a_volunteer_cannot_start_a_drill(api: Api) -> None:
    d = await build_district(api)
    # A start time without "drill" would open a real incident now: refused.
    later = {"elder_id": d.elder_id, "start_at": "2030-01-01T00:00:00Z"}
    r = await api.http.post("/api/v1/incidents", json=later, headers=api.auth("dispatcher"))
    assert r.status_code == 422 and "start_at" in r.text, r.text
    body = {"elder_id": d.elder_id, "drill": True}
    r = await api.http.post("/api/v1/incidents", json=body, headers=d.auth("pair1"))
    assert r.status_code == 403
    r = await api.http.post("/api/v1/incidents", json=body, headers=api.auth("guardian_a"))
    assert r.status_code == 403


@pytest.mark.parametrize("locale", ["zh-CN", "en"])
def test_drill_texts_say_so_first_and_still_fit_two_parts(locale: str) -> None:
    long_values = {
        "name": "欧阳" * 20 if locale == "zh-CN" else "Margaret " * 12,
        "minutes": 12,
        "place": messages.place(850, 40, locale),
        "code": "4821",
        "link": "https://homeward.example.org/v/12345?t=" + "x" * 40,
    }
    for template in ("alert", "team_call", "wide_call", "lead_call", "family_alert", "covered"):
        text = messages.render(template, locale, long_values, drill=True)
        assert text.startswith(messages.drill_prefix(locale)), text
        assert messages.sms_fits(text), (template, len(text))
        assert long_values["code"] in text
        plain = messages.render(template, locale, long_values)
        assert not plain.startswith(messages.drill_prefix(locale))
    # The English marker keeps an English SMS in GSM-7 (153 characters a part, not 67).
    if locale == "en":
        assert messages.render("alert", "en", long_values, drill=True).isascii()
    voice = messages.render("voice_script", locale, long_values, drill=True)
    assert voice.startswith(messages.drill_prefix(locale))


async def test_erasing_her_cancels_her_drill_too(api: Api, alerts_client: redis.Redis) -> None:
    d = await build_district(api)
    body = {"elder_id": d.elder_id, "drill": True}
    r = await api.http.post("/api/v1/incidents", json=body, headers=api.auth("dispatcher"))
    assert r.status_code == 201, r.text
    drill_id = r.json()["id"]
    gone = await api.http.delete(f"/api/v1/elders/{d.elder_id}", headers=api.auth("guardian_a"))
    assert gone.status_code == 204, gone.text
    assert drills.drill_id(alerts_client, d.elder_id) is None
    assert storage.load(alerts_client, drill_id).status == "cancelled"
