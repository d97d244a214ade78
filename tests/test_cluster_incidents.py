"""The incident path on a real Redis Cluster (3 masters of the project's 6.2 binary).

Exit → incident (``commit.lua``) → pages through the outbox shards and the real Twilio
client against the loopback server → the ladder's steps fired by the ticker → an SMS
answer → close, and the feed read with a resume id. The cluster refuses any script or
command over two slots (CROSSSLOT), so running it there is the proof that the commit and
the outbox scripts touch her slot only and that the rest goes through the relay. The
district is registered through the API on the store under test (the cluster itself there).

The crash windows run on both backends: the commit is done, the caller dies before its
relay, and the sweep (or the next commit on her) pages exactly once; a relay applied twice
queues no page twice and fires the ladder's step once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis

from alerts import feed, intake, links, replies
from alerts import keys as alerts_keys
from alerts.incidents import service, storage
from alerts.incidents.config import AlertsConfig
from alerts.notify import twilio
from alerts.notify.channels import Channel, LogChannel
from alerts.notify.outbox import Deliverer, outboxes
from devices.ingest.batch import Message
from devices.ingest.pipeline import UplinkStore
from geofences.evaluator import ZoneEvaluator
from locator import alerts_loop, watchdog
from locator.core import keys, relay, shards
from locator.core.auth import Principal, Role
from locator.core.clock import ManualClock
from locator.core.redis import is_cluster, stream_reply, sync_client
from locator.ticker import Ticker
from locator.twilio_loopback import TwilioLoopback
from tests.alerts_harness import District, build_district, config, north
from tests.conftest import Api, both_backends

UP = "homeward/devices/b-1/up"
TZ = ZoneInfo("Asia/Shanghai")
SID = "AC" + "0123456789abcdef" * 2
TOKEN = "loopback-auth-token-0123456789ab"
CHANNELS = frozenset({"sms", "voice"})
STAFF = Principal(role=Role.DISPATCHER, subject="1")


class Killed(Exception):
    """The process dies here."""


@pytest.fixture
async def district(api: Api) -> District:
    """The alerts district and bracelet b-1 on her (registered on the store under test)."""
    d = await build_district(api)
    body = {"device_id": "b-1", "elder_id": d.elder_id}
    made = await api.http.post("/api/v1/devices", json=body, headers=api.auth("admin"))
    assert made.status_code == 201, made.text
    api.clock.advance(700)  # past the new zone's grace: a first "outside" is an exit
    return d


@pytest.fixture
def loopback() -> Iterator[TwilioLoopback]:
    server = TwilioLoopback(account_sid=SID, auth_token=TOKEN).start()
    yield server
    server.stop()


on_the_cluster = pytest.mark.parametrize("store_backend", ["cluster"], indirect=True)


@pytest.fixture
def backend(district: District, store_url: str, on_cluster: bool) -> Iterator[redis.Redis]:
    """The store the path runs on, where the API registered the district."""
    client = sync_client(store_url, process="test", cluster=on_cluster)
    alerts_loop.ensure_groups(client)
    yield client
    client.close()


def _channels(client: redis.Redis, loop: TwilioLoopback) -> dict[str, Channel]:
    made = twilio.make_client(account_sid=SID, auth_token=TOKEN, base_url=loop.url)
    sender: dict[str, Any] = {
        "from_": "+15005550006",
        "public_url": "http://127.0.0.1:9",
        "link_secret": links.secret(client),
    }
    return {
        "log": LogChannel(),
        "sms": twilio.TwilioSms(made, **sender),
        "voice": twilio.TwilioVoice(made, **sender),
    }


def _deliverer(client: redis.Redis, loop: TwilioLoopback) -> Deliverer:
    d = Deliverer(client, _channels(client, loop), "test-delivery")
    d.ensure_group()
    return d


def _drain(deliverer: Deliverer, clock: ManualClock) -> int:
    total = 0
    while sent := deliverer.run_once(now=clock.time(), block_ms=0):
        total += sent
    return total


def _exit(client: redis.Redis, clock: ManualClock) -> None:
    """Her bracelet walks out of the safe zone through the real ingest store."""
    store = UplinkStore(
        client, clock=clock, retention_s=86400, evaluator=ZoneEvaluator(client, timezone=TZ)
    )
    for metres in (0, 300, 310):
        clock.advance(10)
        body = {"_type": "location", "tst": clock.time(), "acc": 5, **north(metres)}
        assert store.process([Message(UP, json.dumps(body).encode(), clock.time())]).outcomes == {
            "stored": 1
        }


def _consume(client: redis.Redis, cfg: AlertsConfig) -> int:
    total = 0
    while handled := intake.consume_once(client, cfg, consumer="c", block_ms=0):
        total += handled
    return total


def _to(loop: TwilioLoopback, phone: str) -> tuple[int, int]:
    """(messages, calls) the loopback Twilio took for one number."""
    texts = [m for m in loop.messages() if m.form["To"] == phone]
    calls = [c for c in loop.calls() if c.form["To"] == phone]
    return len(texts), len(calls)


def _phone(client: redis.Redis, vid: int) -> str:
    return str(json.loads(str(client.get(alerts_keys.volunteer(vid))))["phone"])


def _left_clean(client: redis.Redis, elder_id: int) -> None:
    assert client.llen(keys.relay(elder_id)) == 0
    assert client.zcard(keys.relay_pending(shards.shard_of(elder_id))) == 0


@on_the_cluster
def test_the_incident_path_runs_on_the_cluster_one_slot_per_script(
    backend: redis.Redis, district: District, clock: ManualClock, loopback: TwilioLoopback
) -> None:
    c, d = backend, district
    assert is_cluster(c)
    cfg = config(clock, channels=CHANNELS)
    deliverer = _deliverer(c, loopback)
    ticker = Ticker(c, clock=clock, offline_after_s=3600, alerts=cfg)
    feed_start = "0-0"
    _exit(c, clock)
    assert _consume(c, cfg) == 1
    incident_id = storage.open_incident_id(c, d.elder_id)
    assert incident_id is not None
    snap = storage.load(c, incident_id)  # located through the relayed incident -> elder index
    code = snap.fields["code"]
    assert c.hget(alerts_keys.INCIDENT_CODES, code) == str(incident_id)
    assert c.zscore(alerts_keys.INCIDENTS_OPEN, str(incident_id)) is not None
    _left_clean(c, d.elder_id)
    # The pages sit on her outbox shard only, and go out through the real Twilio client.
    shard = shards.shard_of(d.elder_id)
    assert c.xlen(alerts_keys.outbox(shard)) > 0
    assert all(c.xlen(s) == 0 for s in outboxes() if s != alerts_keys.outbox(shard))
    assert _drain(deliverer, clock) > 0
    pair1, near200 = _phone(c, d.vid("pair1")), _phone(c, d.vid("near200"))
    assert _to(loopback, pair1) == (1, 0) and _to(loopback, near200) == (1, 0)
    assert _to(loopback, "+8613800138000") == (1, 0)  # her son
    # The ladder: the ticker fires the voice step, then the respond deadline.
    job = storage.sla_job(d.elder_id, incident_id)
    assert c.zscore(keys.job_timers(job), job) is not None
    clock.advance(90)
    assert len(_steps(ticker)) == 1
    _drain(deliverer, clock)
    assert _to(loopback, pair1) == (1, 1)  # not answered the SMS: now called
    clock.advance(90)
    assert len(_steps(ticker)) == 1
    _drain(deliverer, clock)
    member = _phone(c, d.vid("member"))
    assert _to(loopback, member) == (1, 0)  # the team is paged at the respond deadline
    assert storage.load(c, incident_id).fields.get("respond_breached") == "1"
    # An SMS answer from the team member: accepted; then a dispatcher resolves.
    answered = replies.sms_reply(c, cfg, phone=member, body=f"1 {code}")
    assert answered.startswith("已接单") and code in answered
    assert storage.load(c, incident_id).status == "acknowledged"
    closed = service.close(
        c, cfg, caller=STAFF, incident_id=incident_id, status="resolved", outcome="found_safe"
    )
    assert closed.status == "resolved"
    _drain(deliverer, clock)
    assert storage.open_incident_id(c, d.elder_id) is None
    assert c.zscore(alerts_keys.INCIDENTS_OPEN, str(incident_id)) is None
    assert c.hget(alerts_keys.INCIDENT_CODES, code) is None
    assert c.zscore(keys.job_timers(job), job) is None
    # Its hash is a short tombstone (no token): an older schedule relayed late stays out.
    assert c.hget(keys.timer(job), "token") == "" and int(c.ttl(keys.timer(job))) > 0
    assert c.zscore(alerts_keys.INCIDENTS_CLOSED, str(incident_id)) is not None
    assert str(incident_id) in {str(i) for i in c.zrange(alerts_keys.INCIDENTS, 0, -1)}
    _left_clean(c, d.elder_id)
    # One message per attempt (step, recipient, channel), each in the global index too.
    ids = _attempt_ids(c, d.elder_id, incident_id)
    sent = [a for a in ids if c.hget(alerts_keys.attempt(a), "status") == "sent"]
    assert len(sent) == len(loopback.messages()) + len(loopback.calls()) > 10
    assert set(ids) <= {str(a) for a in c.zrange(alerts_keys.ATTEMPTS, 0, -1)}
    # The feed: one stream on its tag, every version in order; a resume id reads the rest.
    entries: Any = c.xrange(alerts_keys.FEED, min=feed_start)
    versions = [int(f["version"]) for _, f in entries if f["incident_id"] == str(incident_id)]
    assert versions == sorted(versions) and versions[0] == 1 and len(set(versions)) == len(versions)
    middle = str(entries[len(entries) // 2][0])
    rest = stream_reply(c.xread({alerts_keys.FEED: middle}, count=100))
    resumed = [entry_id for _, batch in rest for entry_id, _ in batch]
    assert resumed == [str(e[0]) for e in entries[len(entries) // 2 + 1 :]]
    event = feed._event(resumed[-1], dict(entries[-1][1]))
    assert event.startswith(f"id: {resumed[-1]}\nevent: incident\n")
    assert '"status": "resolved"' in event
    # The watchdog's state change and its feed entry are one script on the feed's tag.
    assessment = watchdog.assess(c, now=clock.time())
    assessment.problems.append("test: degraded")
    assert watchdog.record(c, assessment, now=clock.time())
    assert c.get(keys.SYSTEM_STATE) == "degraded"
    assert c.xrevrange(alerts_keys.FEED, count=1)[0][1]["type"] == "system"


@both_backends
def test_a_crash_after_the_commit_pages_once_when_the_sweep_relays_it(
    backend: redis.Redis,
    district: District,
    clock: ManualClock,
    loopback: TwilioLoopback,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c, d = backend, district
    cfg = config(clock, channels=CHANNELS)
    deliverer = _deliverer(c, loopback)
    ticker = Ticker(c, clock=clock, offline_after_s=3600, alerts=cfg)
    _exit(c, clock)
    with monkeypatch.context() as patch:
        patch.setattr(relay, "apply", _killed_after_the_ingest(relay.apply))
        with pytest.raises(Killed):
            _consume_raising(c, cfg)
    # Committed in her slot; nothing on the outbox, no timer, no global index yet.
    incident_id = storage.open_incident_id(c, d.elder_id)
    assert incident_id is not None
    assert c.llen(keys.relay(d.elder_id)) > 0
    assert sum(c.xlen(s) for s in outboxes()) == 0
    job = storage.sla_job(d.elder_id, incident_id)
    assert c.zscore(keys.job_timers(job), job) is None
    assert c.hget(alerts_keys.INCIDENT_ELDER, str(incident_id)) is None
    # Nobody comes back: the ticker's sweep relays it once its intent is old enough.
    assert ticker.sweep_relays() == 0
    clock.advance(relay.SWEEP_AFTER_S + 1)
    swept = ticker.sweep_relays()
    assert swept >= 3
    assert ticker.sweep_relays() == 0
    _left_clean(c, d.elder_id)
    assert c.zscore(keys.job_timers(job), job) is not None
    _drain(deliverer, clock)
    pair1 = _phone(c, d.vid("pair1"))
    assert _to(loopback, pair1) == (1, 0)
    texts = len(loopback.messages())
    # A crash after applying, before the pop: the same list applied again queues nothing
    # new (one marker per attempt), and the ladder's timer stays one job with one token.
    entries = _applied_list(c, d.elder_id, incident_id)
    relay.apply(c, {d.elder_id: entries})
    relay.apply(c, {d.elder_id: entries})
    assert _drain(deliverer, clock) == 0
    # The same attempt queued twice anyway (a retry's requeue racing): sent once.
    first = next(a for a in _attempt_ids(c, d.elder_id, incident_id) if a.endswith(".sms"))
    c.xadd(alerts_keys.outbox_of(first), {"attempt": first})
    assert _drain(deliverer, clock) == 1
    assert len(loopback.messages()) == texts
    clock.advance(90)
    assert len(_steps(ticker)) == 1
    assert _steps(ticker) == []
    _drain(deliverer, clock)
    assert _to(loopback, pair1) == (1, 1)
    # The relayed step's own effects applied twice: its timer again, the step fires once.
    relay.apply(c, {d.elder_id: _applied_list(c, d.elder_id, incident_id)})
    clock.advance(90)
    assert len(_steps(ticker)) == 1
    assert _steps(ticker) == []
    # A slow caller's older schedule applied after the newer one changes nothing.
    before = c.hgetall(keys.timer(job)), c.zscore(keys.job_timers(job), job)
    older = ["T", job, str(clock.time()), "old-token", json.dumps({"step": "t0"}), "1"]
    relay.apply(c, {d.elder_id: [json.dumps(older)]})
    assert (c.hgetall(keys.timer(job)), c.zscore(keys.job_timers(job), job)) == before
    assert _steps(ticker) == []


@both_backends
def test_a_redelivered_alarm_applies_what_a_killed_commit_left(
    backend: redis.Redis,
    district: District,
    clock: ManualClock,
    loopback: TwilioLoopback,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c, d = backend, district
    cfg = config(clock, channels=CHANNELS)
    deliverer = _deliverer(c, loopback)
    _exit(c, clock)
    with monkeypatch.context() as patch:
        patch.setattr(relay, "apply", _killed_after_the_ingest(relay.apply))
        with pytest.raises(Killed):
            _consume_raising(c, cfg)
    assert sum(c.xlen(s) for s in outboxes()) == 0
    # The alarm was never acknowledged: claimed again, it is on the incident already, and
    # what the killed commit left on her relay list is applied then.
    _reclaim(c, cfg)
    assert c.llen(keys.relay(d.elder_id)) == 0
    # The dead writer's intent is left; the sweep unmarks it and finds nothing to apply.
    clock.advance(relay.SWEEP_AFTER_S + 1)
    assert Ticker(c, clock=clock, offline_after_s=3600).sweep_relays() == 0
    _left_clean(c, d.elder_id)
    _drain(deliverer, clock)
    assert _to(loopback, _phone(c, d.vid("pair1"))) == (1, 0)
    assert _to(loopback, _phone(c, d.vid("pair2"))) == (1, 0)


def _steps(ticker: Ticker) -> list[str]:
    """The ladder steps one ticker pass fired (their names, or why they were dropped)."""
    fired = [r for j, r in ticker.run_once() if j.kind == "sla"]
    assert not set(fired) & {"gone", "closed", "conflict"}, fired
    return fired


# --- helpers for the crash windows ---------------------------------------------------------
def _killed_after_the_ingest(real: Any) -> Any:
    """``relay.apply`` that dies on the first incident commit (the ingest's relay runs)."""

    def apply(client: redis.Redis, relays: dict[int, list[str]], **kwargs: Any) -> int:
        if any('"o"' in e or '"f"' in e for entries in relays.values() for e in entries):
            raise Killed
        result: int = real(client, relays, **kwargs)
        return result

    return apply


def _consume_raising(client: redis.Redis, cfg: AlertsConfig) -> None:
    """The intake's loop, with its handler's death passed through (the process dies)."""
    handlers = dict(intake.HANDLERS)

    def dying(kind: str) -> Any:
        def run(*args: Any) -> str:
            try:
                result: str = handlers[kind](*args)
            except Killed:
                raise
            return result

        return run

    for kind in handlers:
        intake.HANDLERS[kind] = dying(kind)
    try:
        batches = intake._read_new(client, "c", 0)
        for stream, entries in batches:
            for entry_id, fields in entries:
                source = intake.source_of(stream, entry_id, fields)
                intake.HANDLERS[intake._kind(stream)](client, cfg, source, fields)
    finally:
        intake.HANDLERS.update(handlers)


def _reclaim(client: redis.Redis, cfg: AlertsConfig) -> None:
    for stream in intake.streams_read():
        pending: Any = client.xpending_range(stream, intake.GROUP, "-", "+", 10)
        for p in pending:
            claimed: Any = client.xclaim(stream, intake.GROUP, "c2", 0, [p["message_id"]])
            for entry_id, fields in claimed:
                source = intake.source_of(stream, entry_id, fields)
                result = intake.HANDLERS[intake._kind(stream)](client, cfg, source, fields)
                assert result == "joined"  # on it already: no new page, her relay applied
                client.xack(stream, intake.GROUP, entry_id)


def _attempt_ids(client: redis.Redis, elder_id: int, incident_id: int) -> list[str]:
    return [
        str(a) for a in client.zrange(alerts_keys.incident_attempts(elder_id, incident_id), 0, -1)
    ]


def _applied_list(client: redis.Redis, elder_id: int, incident_id: int) -> list[str]:
    """What her relay list held for this incident: rebuilt from what was applied."""
    job = storage.sla_job(elder_id, incident_id)
    token = str(client.hget(alerts_keys.incident(elder_id, incident_id), "step_token"))
    due = str(client.hget(alerts_keys.incident(elder_id, incident_id), "next_due"))
    step = str(client.hget(alerts_keys.incident(elder_id, incident_id), "next_step"))
    effects = [["o", a] for a in _attempt_ids(client, elder_id, incident_id)]
    version = str(client.hget(alerts_keys.incident(elder_id, incident_id), "version"))
    effects.append(["T", job, due, token, json.dumps({"step": step}), version])
    return [json.dumps(e) for e in effects]
