"""Forgetting what the alerts stage holds about an elder, and what is past retention.

An erased elder's open incident is cancelled first (every responder stands down, told it
was withdrawn), then each of her incidents keeps only its anonymous SLA figures: times,
deadlines, trigger, outcome, who answered (volunteer ids). Names, notes, places, message
texts, recipients' phones and responders' distances go; so do her notices, her entries on
the outbox and the feed. Closed incidents lose the same after ``INCIDENT_RETENTION_S``.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from alerts import escalation, keys
from alerts.escalation import Change, View
from alerts.incidents import drills, paging, storage
from alerts.incidents.config import AlertsConfig
from locator.core import streams
from locator.core.errors import NotFound
from locator.core.logging import get_logger

log = get_logger(__name__)

REASON = "erased"
# The incident record's fields that are SLA figures or its own machinery; everything else
# (note, origin coordinates, anything added later) is dropped by default.
KEEP_FIELDS = frozenset(
    {
        "id",
        "code",
        "elder_id",
        "status",
        "trigger",
        "t0",
        "respond_deadline",
        "onsite_deadline",
        "acknowledged_at",
        "acknowledged_by",
        "on_site_at",
        "on_site_by",
        "resolved_at",
        "outcome",
        "closed_by",
        "suggested_outcome",
        "respond_breached",
        "onsite_breached",
        "policy",
        "step",
        "next_step",
        "next_due",
        "step_token",
        "opened_by",
        "version",
        "drill",
        "scrubbed",
    }
)
# Timeline entries keep what the SLA report reads; texts (notes) and places go.
KEEP_TIMELINE = frozenset(
    {
        "at",
        "actor",
        "channel",
        "type",
        "trigger",
        "outcome",
        "reason",
        "step",
        "breach",
        "volunteer_id",
        "volunteers",
        "how",
        "more",
        "team",
        "radius_m",
    }
)
# A responder's state keeps its times; where the volunteer was relative to her goes.
DROP_RESPONDER = frozenset({"distance_m", "accept_lat", "accept_lon"})
DROP_ATTEMPT = ("text", "phone", "data")
UNSENT = frozenset({"queued", "retry"})
# The live feed is for the console and integrations, not a record: a week, ~10,000 entries.
FEED_WINDOW_S = 7 * 86400


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def close_for_erasure(
    client: redis.Redis, cfg: AlertsConfig, *, elder_id: int, actor: str
) -> int | None:
    """Cancel her open incident with reason "erased"; her family is not messaged about it."""
    drill = drills.drill_id(client, elder_id)
    if drill is not None:  # her running drill goes the same way
        _cancel_erased(client, cfg, drill, actor=actor, pointer=keys.open_drill(elder_id))
    incident_id = storage.open_incident_id(client, elder_id)
    if incident_id is None:
        return None
    return _cancel_erased(
        client, cfg, incident_id, actor=actor, pointer=keys.open_incident(elder_id)
    )


def _cancel_erased(
    client: redis.Redis, cfg: AlertsConfig, incident_id: int, *, actor: str, pointer: str
) -> int | None:
    now = cfg.clock.time()

    def action(view: View) -> Change:
        if view.status not in escalation.ACTIVE:
            return Change()  # closed meanwhile
        change = escalation.close(view, status="cancelled", outcome=None, now=now, actor=actor)
        # The people who asked for the erasure (or staff) need no SMS naming her.
        change.notices = [n for n in change.notices if n.recipient != "guardians"]
        change.timeline[-1]["reason"] = REASON
        return change

    try:
        # The alerts domain's own commit path: the same read-decide-commit as any cancel.
        paging.mutate(
            client, cfg, incident_id, paging.guarded(action), actor=actor, channel="erasure"
        )
    except NotFound:
        # A pointer to an incident that is not there: nothing to stand down.
        client.delete(pointer)
        return None
    return incident_id


def scrub_incident(
    client: redis.Redis, *, elder_id: int, incident_id: int, spare: frozenset[str] = frozenset()
) -> None:
    """Keep the incident's anonymous SLA figures; drop names, places, texts and phones.

    Attempts in ``spare`` (stand-downs queued by the erasure itself, naming nobody) are left
    to be delivered; any other attempt not sent yet is superseded.
    """
    inc = keys.incident(elder_id, incident_id)
    fields: dict[str, str] = client.hgetall(inc)  # type: ignore[assignment]
    timeline_key = keys.incident_timeline(elder_id, incident_id)
    timeline = [json.loads(e) for e in client.lrange(timeline_key, 0, -1)]
    responders_key = keys.incident_responders(elder_id, incident_id)
    responders: dict[str, str] = client.hgetall(responders_key)  # type: ignore[assignment]
    pipe = client.pipeline(transaction=True)
    dropped = [k for k in fields if k not in KEEP_FIELDS]
    if dropped:
        pipe.hdel(inc, *dropped)
    if fields:
        pipe.hset(inc, "scrubbed", "1")
    pipe.delete(timeline_key)
    for entry in timeline:
        kept = {k: v for k, v in entry.items() if k in KEEP_TIMELINE}
        pipe.rpush(timeline_key, json.dumps(kept, ensure_ascii=False))
    for vid, raw in responders.items():
        doc = {k: v for k, v in json.loads(raw).items() if k not in DROP_RESPONDER}
        pipe.hset(responders_key, vid, json.dumps(doc))
    pipe.delete(keys.incident_sources(elder_id, incident_id))
    pipe.zrem(keys.INCIDENTS_CLOSED, str(incident_id))
    pipe.execute()
    attempts = [_s(a) for a in client.zrange(keys.incident_attempts(elder_id, incident_id), 0, -1)]
    _scrub_attempts(client, [a for a in attempts if a not in spare])


def _scrub_attempts(client: redis.Redis, attempts: list[str]) -> None:
    if not attempts:
        return
    pipe = client.pipeline(transaction=False)
    for attempt in attempts:
        pipe.hget(keys.attempt(attempt), "status")
    statuses = pipe.execute()
    pipe = client.pipeline(transaction=False)
    for attempt, status in zip(attempts, statuses, strict=True):
        pipe.hdel(keys.attempt(attempt), *DROP_ATTEMPT)
        if status in UNSENT:
            # Nothing left to send: delivery skips an attempt that is not queued.
            pipe.hset(keys.attempt(attempt), mapping={"status": "superseded", "error": REASON})
    pipe.execute()


def _attempts_of(client: redis.Redis, elder_id: int) -> list[str]:
    """Every attempt about her (ids start with her id), incidents' and notices' alike."""
    found: list[str] = []
    for member, _ in client.zscan_iter(keys.ATTEMPTS, match=f"{elder_id}.*", count=1000):
        found.append(_s(member))
    return found


def erase_elder(client: redis.Redis, cfg: AlertsConfig, *, elder_id: int, actor: str) -> None:
    """Cancel her open incident, then keep only anonymous SLA figures of what was about her."""
    feed_mark = streams.last_id(client, keys.FEED)
    before = set(_attempts_of(client, elder_id))
    close_for_erasure(client, cfg, elder_id=elder_id, actor=actor)
    fresh = frozenset(set(_attempts_of(client, elder_id)) - before)
    incident_ids = [int(_s(i)) for i in client.zrange(keys.elder_incidents(elder_id), 0, -1)]
    for incident_id in incident_ids:
        scrub_incident(client, elder_id=elder_id, incident_id=incident_id, spare=fresh)
    # Family notices' attempts are no SLA figure: they go whole.
    notices = [a for a in before if a.split(".")[1].startswith("n")]
    _scrub_attempts(client, notices)
    if notices:
        pipe = client.pipeline(transaction=False)
        pipe.delete(*[keys.attempt(a) for a in notices])
        pipe.zrem(keys.ATTEMPTS, *notices)
        pipe.execute()
    client.delete(keys.elder_notices(elder_id), keys.elder_readers(elder_id))
    prefix = f"{elder_id}."
    streams.purge(
        client,
        keys.OUTBOX,
        lambda f: f.get("attempt", "").startswith(prefix) and f.get("attempt") not in fresh,
    )
    # Up to the mark: the cancellation's own feed entry (anonymous) still reaches consoles.
    elder = str(elder_id)
    streams.purge(client, keys.FEED, lambda f: f.get("elder_id") == elder, upto=feed_mark)
    log.info("elder_alerts_erased", elder_id=elder_id, incidents=len(incident_ids))


def sweep_closed(client: redis.Redis, *, now: float, retention_s: int, limit: int = 100) -> int:
    """Closed incidents past retention keep only their SLA figures; returns how many."""
    due: Any = client.zrangebyscore(
        keys.INCIDENTS_CLOSED, "-inf", now - retention_s, start=0, num=limit
    )
    for raw in due:
        incident_id = int(_s(raw))
        elder = client.hget(keys.INCIDENT_ELDER, str(incident_id))
        if elder is None:
            client.zrem(keys.INCIDENTS_CLOSED, str(incident_id))
            continue
        scrub_incident(client, elder_id=int(_s(elder)), incident_id=incident_id)
    return len(due)


def trim_feed(client: redis.Redis, *, now: float, window_s: int = FEED_WINDOW_S) -> int:
    """The live feed keeps the last ``window_s`` seconds (and ~10,000 entries, on write)."""
    return int(client.xtrim(keys.FEED, minid=f"{int((now - window_s) * 1000)}-0"))
