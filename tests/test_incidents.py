"""Incidents and the dispatch ladder through real Redis, the real API and a controlled clock.

The alarm streams are written the way the ingest script writes them; the ticker runs the
ladder's steps when the clock says so; the outbox is delivered through the real channels.
"""

from __future__ import annotations

import json
import threading

import pytest
import redis

from alerts import intake
from alerts import keys as alerts_keys
from alerts.escalation import Policy
from alerts.incidents import paging, reads, storage
from alerts.incidents import service as incidents
from devices import keys as devices_keys
from geofences import keys as geofences_keys
from locator.core import shards, timers
from locator.core.auth import Principal, Role
from locator.core.clock import ManualClock
from locator.core.timers import TimerQueue
from locator.ticker import Ticker
from tests.alerts_harness import (
    District,
    attempts,
    build_district,
    config,
    consume,
    deliverer,
    device_event,
    exit_event,
    north,
    paged,
)
from tests.conftest import Api


@pytest.fixture
def client(alerts_client: redis.Redis) -> redis.Redis:
    return alerts_client


def open_by_exit(
    client: redis.Redis, d: District, clock: ManualClock, channels: frozenset[str] | None = None
) -> int:
    cfg = config(clock, channels=channels) if channels else config(clock)
    exit_event(client, d.elder_id, clock)
    assert consume(client, cfg) == 1
    incident_id = storage.open_incident_id(client, d.elder_id)
    assert incident_id is not None
    return incident_id


def ticker(client: redis.Redis, clock: ManualClock, policy: Policy | None = None) -> Ticker:
    return Ticker(client, clock=clock, offline_after_s=1200, alerts=config(clock, policy=policy))


async def test_an_exit_opens_one_incident_and_pages_pair_guardians_and_three_nearest(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    incident_id = open_by_exit(client, d, clock)
    v = d.vid
    # Both paired (wherever they are, quiet hours or not), the 3 nearest on duty within 1 km
    # outside quiet hours (not the off-duty one at 100 m, not the quiet one at 300 m).
    assert paged(client, incident_id, "t0") == {
        f"volunteer:{v('pair1')}",
        f"volunteer:{v('pair2')}",
        f"volunteer:{v('near200')}",
        f"volunteer:{v('near400')}",
        f"volunteer:{v('near600')}",
        "guardian:0",
        "guardian:1",
    }
    got = await api.http.get(f"/api/v1/incidents/{incident_id}", headers=api.auth("dispatcher"))
    incident = got.json()
    assert incident["status"] == "open" and incident["trigger"] == "zone_exit"
    assert incident["respond_deadline"] == "2026-11-23T08:03:00Z"
    assert incident["onsite_deadline"] == "2026-11-23T08:10:00Z"
    assert incident["next_step"] == "voice" and incident["next_step_at"] == "2026-11-23T08:01:30Z"
    assert len(incident["code"]) == 4
    # Further alarms join the timeline; nobody is paged twice, no second incident.
    before = attempts(client, incident_id)
    device_event(client, d.elder_id, clock, "sos", metres=320)
    exit_event(client, d.elder_id, clock, metres=350)
    assert consume(client, config(clock)) == 2
    assert attempts(client, incident_id) == before
    assert client.zcard(alerts_keys.INCIDENTS) == 1
    timeline = [
        e["type"]
        for e in reads.read(client, storage.load(client, incident_id), caller=_staff()).timeline
    ]
    assert timeline == ["opened", "notified", "alarm", "alarm"]
    # A redelivered entry (crash before ack) joins once only.
    snap = storage.load(client, incident_id)
    stream = devices_keys.device_events(shards.shard_of(d.elder_id))
    entry = client.xrange(stream)[-1]
    assert (
        incidents.join(
            client,
            config(clock),
            incident_id=incident_id,
            trigger="sos",
            at=None,
            actor="system",
            channel="device",
            source=intake.source_of(stream, entry[0], entry[1]),
        )
        == "seen"
    )
    assert storage.load(client, incident_id).version == snap.version


def _staff():  # type: ignore[no-untyped-def]
    from locator.core.auth import Principal, Role

    return Principal(role=Role.DISPATCHER)


async def test_the_ladder_voice_then_team_and_dispatcher_at_the_deadline_not_before(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    incident_id = open_by_exit(client, d, clock)
    tick = ticker(client, clock)
    clock.advance(89)
    assert tick.run_once() == []
    clock.advance(1)
    assert [result for _, result in tick.run_once()] == ["voice"]
    # No voice channel is configured yet: the voice step falls to the next channel (log).
    voice = {
        a["recipient"]: a["channel"]
        for a in attempts(client, incident_id).values()
        if a["step"] == "voice"
    }
    assert len(voice) == 5 and set(voice.values()) == {"log"}
    clock.advance(89)  # 08:02:59 — one second before the respond deadline
    assert tick.run_once() == []
    assert paged(client, incident_id, "respond") == set()
    clock.advance(1)
    assert [result for _, result in tick.run_once()] == ["respond"]
    assert paged(client, incident_id, "respond") == {
        f"volunteer:{d.vid('lead')}",
        f"volunteer:{d.vid('member')}",
        f"dispatcher:{d.dispatcher_id}",
    }
    incident = storage.load(client, incident_id)
    assert incident.fields["respond_breached"] == "1"
    # The team member accepts late: the lead is told "covered, stand by"...
    incidents.answer(
        client,
        config(clock),
        caller=Principal(Role.VOLUNTEER, str(d.vid("member"))),
        incident_id=incident_id,
        action="ack",
        channel="api",
    )
    clock.advance(420)  # 08:10:00, nobody on site: 3 km radius + the team lead
    assert [result for _, result in tick.run_once()] == ["onsite"]
    onsite = paged(client, incident_id, "onsite")
    assert f"volunteer:{d.vid('far2000')}" in onsite and f"volunteer:{d.vid('near900')}" in onsite
    assert f"volunteer:{d.vid('lead')}" in onsite
    assert storage.load(client, incident_id).fields["onsite_breached"] == "1"
    # ...and still called at the on-site deadline, standing by or not.
    lead_call = next(
        a
        for a, doc in attempts(client, incident_id).items()
        if doc["recipient"] == f"volunteer:{d.vid('lead')}" and doc["step"] == "onsite"
    )
    assert deliverer(client, None).deliver(lead_call, now=clock.time()) == "sent"
    clock.advance(3600)
    assert tick.run_once() == []  # the ladder ends there


async def test_decline_pages_the_next_nearest_and_accept_stands_the_rest_down(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    incident_id = open_by_exit(client, d, clock)
    url = f"/api/v1/incidents/{incident_id}"
    clock.advance(20)
    r = await api.http.post(f"{url}/decline", headers=d.auth("near200"))
    assert r.status_code == 200, r.text
    assert paged(client, incident_id, "nearby") == {f"volunteer:{d.vid('near900')}"}
    # Someone who was not alerted cannot answer; a dispatcher does not accept for anyone.
    assert (await api.http.post(f"{url}/ack", headers=d.auth("far2000"))).status_code == 403
    assert (await api.http.post(f"{url}/ack", headers=api.auth("dispatcher"))).status_code == 403
    clock.advance(40)
    r = await api.http.post(f"{url}/ack", headers=d.auth("near400"))
    assert r.status_code == 200, r.text
    incident = r.json()
    assert incident["status"] == "acknowledged"
    assert incident["acknowledged_at"] == "2026-11-23T08:01:00Z"
    states = {x["volunteer_id"]: x["state"] for x in incident["responders"]}
    assert states[d.vid("near400")] == "accepted"
    assert states[d.vid("near200")] == "declined"
    assert states[d.vid("pair1")] == states[d.vid("near900")] == "stood_down"
    assert paged(client, incident_id, "covered") == {
        f"volunteer:{d.vid(n)}" for n in ("pair1", "pair2", "near600", "near900")
    }
    # The accept stopped the ladder's voice/respond steps: next is the on-site deadline.
    assert incident["next_step"] == "onsite"
    tick = ticker(client, clock)
    clock.advance(200)
    assert tick.run_once() == []
    assert paged(client, incident_id, "respond") == set()
    # Accepting twice is harmless; declining after accepting is a conflict.
    assert (await api.http.post(f"{url}/ack", headers=d.auth("near400"))).status_code == 200
    assert (await api.http.post(f"{url}/decline", headers=d.auth("near400"))).status_code == 409


async def test_withdraw_reopens_and_pages_the_next_nearest(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    incident_id = open_by_exit(client, d, clock)
    url = f"/api/v1/incidents/{incident_id}"
    assert (await api.http.post(f"{url}/ack", headers=d.auth("pair1"))).status_code == 200
    r = await api.http.post(f"{url}/withdraw", headers=d.auth("pair1"))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "open"
    assert r.json()["acknowledged_at"] is not None  # the respond SLA keeps its first accept
    assert paged(client, incident_id, "nearby") == {f"volunteer:{d.vid('near900')}"}
    assert r.json()["next_step"] == "voice"


async def test_location_puts_an_accepted_volunteer_on_site_and_resolve_closes(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    client.hset(
        devices_keys.last_position(d.elder_id),
        mapping={**{k: str(v) for k, v in north(300).items()}, "acc": "15"},
    )
    incident_id = open_by_exit(client, d, clock)
    url = f"/api/v1/incidents/{incident_id}"
    clock.advance(30)
    assert (await api.http.post(f"{url}/ack", headers=d.auth("near600"))).status_code == 200
    vid = d.vid("near600")
    # Not moved yet (still where they accepted): not on site, whatever the distance.
    loc = f"/api/v1/volunteers/{vid}/location"
    clock.advance(60)
    r = await api.http.post(loc, json={**north(420), "acc": 10}, headers=d.auth("near600"))
    assert r.status_code == 200
    assert storage.load(client, incident_id).status == "acknowledged"  # 120 m > 100 + 10
    clock.advance(60)
    r = await api.http.post(loc, json={**north(380), "acc": 10}, headers=d.auth("near600"))
    incident = (await api.http.get(url, headers=api.auth("dispatcher"))).json()
    assert incident["status"] == "on_site"
    assert incident["on_site_at"] == "2026-11-23T08:02:30Z"
    assert incident["next_step"] is None  # on site: the ladder is done
    assert [e["type"] for e in incident["timeline"]][-1] == "arrived"
    # The guardian resolves; everyone still involved stands down; the elder is free again.
    r = await api.http.post(
        f"{url}/resolve",
        json={"outcome": "found_safe", "note": "在公交站"},
        headers=api.auth("guardian_a"),
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "resolved" and r.json()["outcome"] == "found_safe"
    assert storage.open_incident_id(client, d.elder_id) is None
    assert f"volunteer:{vid}" in paged(client, incident_id, "resolved")
    again = await api.http.post(
        f"{url}/resolve", json={"outcome": "other"}, headers=api.auth("dispatcher")
    )
    assert again.status_code == 409
    assert (await api.http.post(f"{url}/cancel", headers=api.auth("dispatcher"))).status_code == 409
    # The next alarm opens a new incident.
    exit_event(client, d.elder_id, clock)
    consume(client, config(clock))
    assert storage.open_incident_id(client, d.elder_id) not in (None, incident_id)


async def test_manual_report_and_roles(api: Api, client: redis.Redis, clock: ManualClock) -> None:
    d = await build_district(api)
    body = {"elder_id": d.elder_id, "note": "早上出门没回来", "last_seen_at": north(800)}
    assert (
        await api.http.post("/api/v1/incidents", json=body, headers=api.auth("guardian_b"))
    ).status_code == 403
    assert (
        await api.http.post("/api/v1/incidents", json=body, headers=d.auth("pair1"))
    ).status_code == 403
    bad = await api.http.post(
        "/api/v1/incidents",
        json={"elder_id": d.elder_id, "last_seen_at": {"lat": 91, "lon": 0}},
        headers=api.auth("guardian_a"),
    )
    assert bad.status_code == 422 and "last_seen_at" in bad.text
    r = await api.http.post("/api/v1/incidents", json=body, headers=api.auth("guardian_a"))
    assert r.status_code == 201, r.text
    incident = r.json()
    assert incident["trigger"] == "missing" and incident["status"] == "open"
    # Nearest to where she was last seen (800 m north), not to her home.
    near = {x["volunteer_id"] for x in incident["responders"] if x["kind"] == "nearby"}
    assert near == {d.vid("near600"), d.vid("near900"), d.vid("near400")}
    url = f"/api/v1/incidents/{incident['id']}"
    assert (await api.http.get(url, headers=api.auth("guardian_b"))).status_code == 403
    assert (await api.http.get(url, headers=d.auth("far2000"))).status_code == 403
    assert (await api.http.get(url, headers=d.auth("pair1"))).status_code == 200
    # A paged volunteer may read the elder; one never paged may not.
    elder = f"/api/v1/elders/{d.elder_id}"
    assert (await api.http.get(elder, headers=d.auth("pair1"))).status_code == 200
    assert (await api.http.get(elder, headers=d.auth("far2000"))).status_code == 403
    # Only a dispatcher cancels; a guardian may not.
    assert (await api.http.post(f"{url}/cancel", headers=api.auth("guardian_a"))).status_code == 403
    lists = await api.http.get("/api/v1/incidents?status=open", headers=api.auth("guardian_b"))
    assert lists.json()["items"] == []
    lists = await api.http.get("/api/v1/incidents?status=all", headers=d.auth("pair1"))
    assert [i["id"] for i in lists.json()["items"]] == [incident["id"]]
    r = await api.http.post(f"{url}/cancel", json={"note": "误报"}, headers=api.auth("dispatcher"))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    closed = await api.http.get("/api/v1/incidents?status=closed", headers=api.auth("admin"))
    assert [i["id"] for i in closed.json()["items"]] == [incident["id"]]
    # One elder's history: her family and staff may ask; another family may not.
    one = f"/api/v1/incidents?status=all&elder_id={d.elder_id}"
    mine = await api.http.get(one, headers=api.auth("guardian_a"))
    assert [i["id"] for i in mine.json()["items"]] == [incident["id"]]
    assert (await api.http.get(one, headers=api.auth("guardian_b"))).status_code == 403
    assert (await api.http.get(one, headers=d.auth("pair1"))).status_code == 403
    none = await api.http.get(
        "/api/v1/incidents?status=all&elder_id=99999", headers=api.auth("admin")
    )
    assert none.status_code == 404


async def test_returned_home_stands_everyone_down(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    incident_id = open_by_exit(client, d, clock)
    zone_id = next(iter(client.hkeys(geofences_keys.zones(d.elder_id))))
    clock.advance(120)
    exit_event(client, d.elder_id, clock, metres=50, kind="zone_enter", zone_id=str(zone_id))
    consume(client, config(clock))
    incident = reads.read(client, storage.load(client, incident_id), caller=_staff())
    assert incident.suggested_outcome == "returned_home"
    assert incident.next_step is None
    assert len(paged(client, incident_id, "returned_home")) == 5 + 2
    assert {r.state for r in incident.responders} == {"stood_down"}
    # The exit alarm redelivered (say its ack was lost): it is on this incident already.
    exit_source = next(
        iter(client.smembers(alerts_keys.incident_sources(d.elder_id, incident_id)))  # type: ignore[call-overload]
    )
    again_id, opened = incidents.open_or_join(
        client,
        config(clock),
        elder_id=d.elder_id,
        trigger="zone_exit",
        at=None,
        actor="system",
        channel="device",
        source=str(exit_source),
    )
    assert (again_id, opened) == (incident_id, False)
    assert storage.load(client, incident_id).status == "open"
    # She leaves again (or presses SOS): the quiet incident closes, a fresh ladder pages.
    clock.advance(600)
    device_event(client, d.elder_id, clock, "sos")
    consume(client, config(clock))
    closed = storage.load(client, incident_id)
    assert closed.status == "resolved" and closed.fields.get("outcome") == "returned_home"
    again = storage.open_incident_id(client, d.elder_id)
    assert again is not None and again != incident_id
    assert f"volunteer:{d.vid('pair1')}" in paged(client, again, "t0")
    assert storage.load(client, again).fields.get("trigger") == "sos"


async def test_family_first_notices_are_not_incidents(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    cfg = config(clock)
    zone_id = next(iter(client.hkeys(geofences_keys.zones(d.elder_id))))
    client.hset(
        geofences_keys.zone_state(d.elder_id),
        str(zone_id),
        json.dumps({"t": "inside", "s": 0, "to": None, "r": "inside", "said": None}),
    )
    device_event(client, d.elder_id, clock, "low_battery", detail="18")
    device_event(client, d.elder_id, clock, "device_offline")
    device_event(client, d.elder_id, clock, "removed")
    assert consume(client, cfg) == 3
    assert client.zcard(alerts_keys.INCIDENTS) == 0
    notices = await api.http.get(
        f"/api/v1/elders/{d.elder_id}/notices", headers=api.auth("guardian_a")
    )
    assert [n["type"] for n in notices.json()["items"]] == [
        "removed_home",
        "offline_home",
        "low_battery",
    ]
    assert "18%" in notices.json()["items"][2]["text"]
    log = await api.http.get("/api/v1/notifications", headers=api.auth("guardian_a"))
    assert sorted({(n["template"], n["recipient"]) for n in log.json()["items"]}) == sorted(
        {
            (t, g)
            for t in ("low_battery", "offline_home", "removed_home")
            for g in ("guardian:0", "guardian:1")
        }
    )
    assert (await api.http.get("/api/v1/notifications", headers=api.auth("guardian_b"))).json()[
        "items"
    ] == []
    # Outside every safe zone, the same offline is an incident.
    client.hset(
        geofences_keys.zone_state(d.elder_id),
        str(zone_id),
        json.dumps({"t": "outside", "s": 0, "to": None, "r": "outside", "said": "outside"}),
    )
    device_event(client, d.elder_id, clock, "device_offline", metres=400)
    consume(client, cfg)
    incident_id = storage.open_incident_id(client, d.elder_id)
    assert incident_id is not None
    assert storage.load(client, incident_id).fields["trigger"] == "device_offline"


async def test_a_running_incident_keeps_its_policy_snapshot(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    incident_id = open_by_exit(client, d, clock)
    client.set(alerts_keys.POLICY, json.dumps({"respond_s": 60, "voice_after_s": 30}))
    tick = ticker(client, clock, policy=Policy(respond_s=60, voice_after_s=30))
    clock.advance(61)
    assert tick.run_once() == []  # the running incident still waits 90 s for the voice step
    clock.advance(29)
    assert [r for _, r in tick.run_once()] == ["voice"]
    # A new incident snapshots the edited policy.
    incidents.close(
        client,
        config(clock),
        caller=_staff(),
        incident_id=incident_id,
        status="resolved",
        outcome="other",
    )
    second = open_by_exit(client, d, clock)
    assert json.loads(storage.load(client, second).fields["policy"])["respond_s"] == 60


async def test_two_tickers_and_a_killed_ticker_never_double_or_skip_a_step(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    incident_id = open_by_exit(client, d, clock)
    job_id = storage.sla_job(d.elder_id, incident_id)
    clock.advance(90)
    # A ticker claims the voice step and dies before running it.
    [claimed] = TimerQueue(client).claim(now=clock.time())
    assert claimed.id == job_id
    ticks = [ticker(client, clock), ticker(client, clock)]
    assert ticks[0].run_once() == [] and ticks[1].run_once() == []  # leased: nobody else yet
    clock.advance(timers.LEASE_S + 1)
    # Two tickers race for it after the lease: exactly one runs it.
    results: list[list[str]] = [[], []]
    barrier = threading.Barrier(2)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = [r for _, r in ticks[i].run_once()]

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results[0] + results[1]) == ["voice"]
    # The dead ticker comes back and runs its stale claim: dropped, nobody paged twice.
    voice_pages = paged(client, incident_id, "voice")
    assert paging.run_step(client, config(clock), claimed) == "stale"
    assert paged(client, incident_id, "voice") == voice_pages
    # The respond step was scheduled once, at its own deadline.
    assert timers.due_at(client, job_id) == storage.load(client, incident_id).t0 + 180
    # Killed after the commit but before completing the job: the step is not run again.
    clock.advance(180)
    [respond] = TimerQueue(client).claim(now=clock.time())
    assert paging.run_step(client, config(clock), respond) == "respond"
    clock.advance(timers.LEASE_S + 1)
    assert [r for _, r in ticks[0].run_once()] == []  # the job now waits for the on-site step
    timeline = reads.read(client, storage.load(client, incident_id), caller=_staff()).timeline
    assert [e["step"] for e in timeline if e["type"] == "step"] == ["voice", "respond"]


async def test_delivery_reaches_volunteers_over_mqtt_and_falls_back(
    api: Api, client: redis.Redis, clock: ManualClock, mqtt_url: str
) -> None:
    from locator.core.mqtt import MqttPublisher
    from tests.ingest_harness import wait_for
    from tests.test_ingest import Listener

    d = await build_district(api)
    listener = Listener(mqtt_url, "homeward/volunteers/+/alerts")
    publisher = MqttPublisher(mqtt_url, client_id="test-delivery-pub")
    try:
        incident_id = open_by_exit(client, d, clock)
        sender = deliverer(client, publisher)
        # 5 volunteers (log chain + MQTT push extra), 2 guardians (log).
        assert sender.run_once(now=clock.time(), block_ms=10) == 12
        wait_for(lambda: len(listener.messages) >= 5, timeout=5)
        got = {topic for topic, _ in listener.messages}
        assert got == {
            f"homeward/volunteers/{d.vid(n)}/alerts"
            for n in ("pair1", "pair2", "near200", "near400", "near600")
        }
        message = next(m for _, m in listener.messages)
        assert message["incident_id"] == incident_id and message["type"] == "alert"
        assert "张阿婆" in message["text"]
        statuses: dict[str, set[tuple[str, str]]] = {}
        for a in attempts(client, incident_id).values():
            statuses.setdefault(a["recipient"], set()).add((a["channel"], a["status"]))
        assert statuses["guardian:0"] == {("log", "sent")}
        assert statuses[f"volunteer:{d.vid('pair1')}"] == {("mqtt", "sent"), ("log", "sent")}
        # Redelivering the same outbox entries sends nothing again.
        before = len(listener.messages)
        for aid in attempts(client, incident_id):
            assert sender.deliver(aid, now=clock.time()) == "sent"
        assert len(listener.messages) == before
    finally:
        listener.close()
        publisher.close()


async def test_unknown_fate_falls_back_and_transient_failures_retry(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    from alerts.notify.channels import LogChannel, Message, Result
    from alerts.notify.outbox import Deliverer

    class Scripted:
        """A channel whose provider answers as scripted (the Twilio tests use a real server)."""

        def __init__(self, name: str, outcomes: list[str]) -> None:
            self.name = name
            self.outcomes = outcomes
            self.sent: list[str] = []

        def send(self, message: Message) -> Result:
            self.sent.append(message.attempt_id)
            return Result(self.outcomes.pop(0), "scripted")  # type: ignore[arg-type]

    d = await build_district(api)
    incident_id = open_by_exit(client, d, clock, channels=frozenset({"sms", "voice", "log"}))

    def attempt_of(name: str) -> str:
        recipient = f"volunteer:{d.vid(name)}"
        return next(
            a for a, doc in attempts(client, incident_id).items() if doc["recipient"] == recipient
        )

    sms = Scripted("sms", ["transient", "transient", "sent"])
    voice = Scripted("voice", [])
    sender = Deliverer(client, {"sms": sms, "voice": voice, "log": LogChannel()}, "t")
    aid = attempt_of("pair1")
    assert aid.endswith(".sms")
    assert sender.deliver(aid, now=clock.time()) == "retry"
    job = timers.job_id("deliver", aid)
    assert timers.due_at(client, job) == clock.time() + 2
    clock.advance(2)
    tick = ticker(client, clock)
    assert [r for _, r in tick.run_once()] == ["requeued"]
    assert sender.deliver(aid, now=clock.time()) == "retry"
    assert sender.deliver(aid, now=clock.time()) == "sent"
    assert client.hget(alerts_keys.attempt(aid), "tries") == "3"
    # A crash between the provider's answer and recording it: found "sending" on redelivery,
    # the message is not resent on that channel, the next channel (voice) gets it.
    aid2 = attempt_of("pair2")
    client.hset(alerts_keys.attempt(aid2), "status", "sending")
    assert sender.deliver(aid2, now=clock.time()) == "unknown"
    assert aid2 not in sms.sent
    fallback = aid2.rsplit(".", 1)[0] + ".voice"
    assert client.hget(alerts_keys.attempt(fallback), "fallback_of") == aid2
    voice.outcomes = ["unknown"]  # the provider did not answer: fate unknown, next channel
    assert sender.deliver(fallback, now=clock.time()) == "unknown"
    assert client.hget(alerts_keys.attempt(aid2.rsplit(".", 1)[0] + ".log"), "status") == "queued"
    # A permanent failure moves on to the next channel too.
    sms.outcomes = ["failed"]
    aid3 = attempt_of("near200")
    assert sender.deliver(aid3, now=clock.time()) == "failed"
    assert client.hget(alerts_keys.attempt(aid3.rsplit(".", 1)[0] + ".voice"), "status") == "queued"
    # A crash between recording a failure and queueing the next channel: the redelivered
    # entry finds "failed" and queues the fallback (once).
    aid4 = attempt_of("near400")
    client.hset(alerts_keys.attempt(aid4), mapping={"status": "failed", "tries": "1"})
    assert sender.deliver(aid4, now=clock.time()) == "failed"
    assert sender.deliver(aid4, now=clock.time()) == "failed"
    assert aid4 not in sms.sent
    assert client.hget(alerts_keys.attempt(aid4.rsplit(".", 1)[0] + ".voice"), "status") == "queued"
    # Once the incident is closed, a late fallback of a call to act does not ring anyone.
    incidents.close(
        client,
        config(clock),
        caller=_staff(),
        incident_id=incident_id,
        status="resolved",
        outcome="found_safe",
    )
    late = aid3.rsplit(".", 1)[0] + ".voice"
    assert sender.deliver(late, now=clock.time()) == "superseded"
    assert late not in voice.sent
    assert client.hget(alerts_keys.attempt(late), "error") == "incident resolved"


def test_the_event_relay_publishes_what_a_broker_outage_left_pending(
    client: redis.Redis, mqtt_url: str
) -> None:
    from locator.alerts_loop import EVENTS_TOPIC, RELAY_GROUP, relay_once
    from locator.core.mqtt import MqttPublisher
    from tests.browser import free_port
    from tests.ingest_harness import wait_for
    from tests.test_ingest import Listener

    for version in (1, 2, 3):
        client.xadd(
            alerts_keys.FEED,
            {"type": "incident", "incident_id": "7", "elder_id": "1", "version": str(version)},
        )
    down = MqttPublisher(f"mqtt://127.0.0.1:{free_port()}", client_id="test-relay-down")
    listener = Listener(mqtt_url, EVENTS_TOPIC)
    up = MqttPublisher(mqtt_url, client_id="test-relay-up")
    try:
        assert relay_once(client, down, consumer="relay-1", block_ms=10) == 0
        assert client.xpending(alerts_keys.FEED, RELAY_GROUP)["pending"] == 3  # kept, not acked
        # The same relay, broker back: the pending entries go out before anything new.
        assert relay_once(client, up, consumer="relay-1", block_ms=10) == 3
        wait_for(lambda: len(listener.messages) == 3, timeout=5)
        assert [m["version"] for _, m in listener.messages] == [1, 2, 3]
        assert client.xpending(alerts_keys.FEED, RELAY_GROUP)["pending"] == 0
        assert relay_once(client, up, consumer="relay-1", block_ms=10) == 0  # nothing twice
    finally:
        down.close()
        up.close()
        listener.close()


async def test_closing_an_incident_ends_the_volunteers_read_access_but_not_the_pairs(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    incident_id = open_by_exit(client, d, clock)
    readers = alerts_keys.elder_readers(d.elder_id)
    assert client.sismember(readers, str(d.vid("near200")))  # sent, so she may read the elder
    elder_url = f"/api/v1/elders/{d.elder_id}"
    assert (await api.http.get(elder_url, headers=d.auth("near200"))).status_code == 200
    r = await api.http.post(
        f"/api/v1/incidents/{incident_id}/resolve",
        json={"outcome": "found_safe"},
        headers=api.auth("dispatcher"),
    )
    assert r.status_code == 200, r.text
    assert (await api.http.get(elder_url, headers=d.auth("near200"))).status_code == 403
    assert (await api.http.get(elder_url, headers=d.auth("pair1"))).status_code == 200
