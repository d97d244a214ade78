"""An incident in Redis: its snapshot (hash, responders), the commit plan and the commit script.

Every change is read → decided (``alerts.escalation``, pure) → committed by one script
(``commit.lua``) only if the incident's version is still the one read.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from alerts import escalation, keys
from alerts.escalation import Change, Policy, View
from alerts.incidents import compose, drills
from alerts.incidents.config import AlertsConfig
from devices.elders.records import ElderRecord
from devices.elders.service import read_elder
from locator.core import keys as core_keys
from locator.core import timers
from locator.core.clock import isoformat
from locator.core.errors import NotFound
from locator.core.scripts import Script

_COMMIT = Script.from_package("alerts.incidents", "commit.lua")
_FIXED_KEYS = 17


@dataclass(frozen=True)
class Snapshot:
    """An incident as read: its hash fields and its responders by volunteer id."""

    elder_id: int
    incident_id: int
    fields: dict[str, str]
    responders: dict[int, dict[str, Any]]

    @property
    def status(self) -> str:
        return self.fields["status"]

    @property
    def version(self) -> str:
        return self.fields["version"]

    @property
    def policy(self) -> Policy:
        return Policy.from_json(json.loads(self.fields["policy"]))

    @property
    def t0(self) -> float:
        return float(self.fields["t0"])

    @property
    def drill(self) -> bool:
        return self.fields.get("drill") == "1"

    def view(self) -> View:
        return View(
            status=self.status,
            responders=self.responders,
            acknowledged_at=_float(self.fields.get("acknowledged_at")),
            on_site_at=_float(self.fields.get("on_site_at")),
            step=self.fields.get("step"),
            respond_deadline=_float(self.fields.get("respond_deadline")),
            onsite_deadline=_float(self.fields.get("onsite_deadline")),
        )


def _float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def elder_of(client: redis.Redis, incident_id: int) -> int:
    """The elder an incident belongs to (locates its hash tag); 404 if unknown."""
    elder = client.hget(keys.INCIDENT_ELDER, str(incident_id))
    if elder is None:
        raise NotFound(f"incident {incident_id} not found")
    return int(elder)


def load(client: redis.Redis, incident_id: int) -> Snapshot:
    """The incident's fields and responders as they are now."""
    elder_id = elder_of(client, incident_id)
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.incident(elder_id, incident_id))
    pipe.hgetall(keys.incident_responders(elder_id, incident_id))
    fields, responders = pipe.execute()
    if not fields:
        raise NotFound(f"incident {incident_id} not found")
    return Snapshot(
        elder_id, incident_id, fields, {int(k): json.loads(v) for k, v in responders.items()}
    )


def read_incident(client: redis.Redis, *, incident_id: int) -> Snapshot | None:
    """The incident as stored now; None if there is none (``load`` answers 404 instead)."""
    try:
        return load(client, incident_id)
    except NotFound:
        return None


def read_timeline(client: redis.Redis, *, elder_id: int, incident_id: int) -> list[dict[str, Any]]:
    """The incident's timeline entries, oldest first."""
    raw: Any = client.lrange(keys.incident_timeline(elder_id, incident_id), 0, -1)
    return [json.loads(e) for e in raw]


def open_incident_id(client: redis.Redis, elder_id: int) -> int | None:
    """The elder's open (real) incident, if any."""
    raw = client.get(keys.open_incident(elder_id))
    return int(raw) if raw else None


def queue_open_incident_id(pipe: Any, *, elder_id: int) -> None:
    """Queue ``open_incident_id``'s read in a pipeline; its reply is the id or None."""
    pipe.get(keys.open_incident(elder_id))


class Plan:
    """Builds the commit script's plan and its extra keys."""

    def __init__(self, snap_elder: int, incident_id: int, *, drill: bool = False) -> None:
        self.elder_id = snap_elder
        self.incident_id = incident_id
        self.drill = drill
        self.extra_keys: list[str] = []
        self.body: dict[str, Any] = {
            "incident_id": incident_id,
            "elder_id": snap_elder,
            "fields": {},
            "responders": {},
            "timeline": [],
            "index": [],
            "attempts": [],
            "feed": [],
            "ladder": {"op": "keep"},
        }

    def key_index(self, key: str) -> int:
        if key not in self.extra_keys:
            self.extra_keys.append(key)
        return self.extra_keys.index(key) + 1

    def keys(self) -> list[str]:
        e, i = self.elder_id, self.incident_id
        fixed = [
            keys.incident(e, i),
            keys.incident_timeline(e, i),
            keys.incident_responders(e, i),
            keys.incident_attempts(e, i),
            core_keys.job_timers(sla_job(e, i)),
            core_keys.timer(sla_job(e, i)),
            keys.OUTBOX,
            keys.FEED,
            keys.ATTEMPTS,
            keys.open_drill(e) if self.drill else keys.open_incident(e),
            keys.INCIDENTS_OPEN,
            keys.INCIDENT_CODES,
            keys.incident_sources(e, i),
            core_keys.sequence("attempt"),
            keys.INCIDENTS,
            keys.INCIDENT_ELDER,
            keys.elder_incidents(e),
        ]
        assert len(fixed) == _FIXED_KEYS
        return fixed + self.extra_keys


def sla_job(elder_id: int, incident_id: int) -> str:
    """The incident's one ladder timer job id."""
    return timers.job_id("sla", elder_id, incident_id)


def commit(
    client: redis.Redis, plan: Plan, *, version: str, token: str, now: float
) -> tuple[str, str]:
    """Run the commit script on a plan; (verdict, detail)."""
    reply = _COMMIT(
        client,
        keys=plan.keys(),
        args=[version, token, json.dumps(plan.body, ensure_ascii=False), repr(now)],
    )
    verdict, detail = (as_str(x) for x in reply)
    return verdict, detail


def as_str(value: object) -> str:
    """A Redis reply value as text (bytes or not)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def elder_record(client: redis.Redis, elder_id: int) -> ElderRecord:
    """Her record, or a nameless stand-in once she is gone or being erased."""
    record = read_elder(client, elder_id=elder_id)
    if record is None or not record.live:
        # Gone or being erased: messages name her by number and reach no family phone.
        return ElderRecord.anonymous(elder_id)
    return record


def current_policy(client: redis.Redis, default: Policy) -> Policy:
    """The policy a new incident snapshots: the stored one, else the settings' numbers."""
    raw = client.get(keys.POLICY)
    if not raw:
        return default
    return Policy.from_json({**default.to_json(), **json.loads(raw)})


def new_code(client: redis.Redis) -> str:
    """A short incident code not in use (what people type in SMS answers)."""
    for _ in range(50):
        code = f"{secrets.randbelow(9000) + 1000}"
        if not client.hexists(keys.INCIDENT_CODES, code):
            return code
    return secrets.token_hex(3)


def build(
    client: redis.Redis,
    cfg: AlertsConfig,
    plan: Plan,
    *,
    fields: dict[str, str],
    previous: dict[int, dict[str, Any]],
    change: Change,
    actor: str,
    channel: str,
    now: float,
) -> None:
    """Turn a decision into the commit plan: fields, responders, timeline, attempts, ladder."""
    body = plan.body
    status = change.status or fields.get("status", "open")
    if change.status:
        body["fields"]["status"] = change.status
    for name, value in change.fields.items():
        body["fields"][name] = "1" if value is True else ("" if value is None else str(value))
    for vid, update in change.responders.items():
        merged = {**previous.get(vid, {}), **update}
        body["responders"][str(vid)] = json.dumps(merged)
        plan.body["index"].append(
            [
                plan.key_index(keys.volunteer_incidents(vid)),
                "zadd",
                plan.incident_id,
                str(plan.incident_id),
            ]
        )
        plan.body["index"].append(
            [plan.key_index(keys.elder_readers(plan.elder_id)), "sadd", str(vid)]
        )
    if change.status in ("resolved", "cancelled"):
        # Closed: volunteers sent to it no longer read her record or photo (her paired
        # volunteers keep reading it: they are hers, not the incident's).
        pair = client.get(keys.pair(plan.elder_id))
        paired = set(json.loads(pair)["volunteer_ids"]) if pair else set()
        for vid in sorted((set(previous) | set(change.responders)) - paired):
            plan.body["index"].append(
                [plan.key_index(keys.elder_readers(plan.elder_id)), "srem", str(vid)]
            )
    stamp = isoformat(datetime.fromtimestamp(now, tz=cfg.timezone))
    for entry in change.timeline:
        body["timeline"].append(
            json.dumps(
                {"at": stamp, "actor": actor, "channel": channel, **entry}, ensure_ascii=False
            )
        )
    drill = fields.get("drill") == "1"
    if drill:
        change.notices = drills.family_filter(
            change.notices, fields=fields, notify_family=cfg.drill_notify_family
        )
    if change.notices:
        for attempt in compose.attempts(
            client,
            cfg,
            elder=elder_record(client, plan.elder_id),
            elder_id=plan.elder_id,
            incident_id=plan.incident_id,
            fields=fields,
            changed=change.fields,
            notices=change.notices,
            drill=drill,
            now=now,
        ):
            body["attempts"].append(
                {
                    "k": plan.key_index(keys.attempt(attempt.id)),
                    "id": attempt.id,
                    "fields": attempt.record(),
                }
            )
    if change.ladder == "stop":
        body["ladder"] = {"op": "stop", "job": sla_job(plan.elder_id, plan.incident_id)}
    elif change.ladder == "next":
        policy = Policy.from_json(json.loads(fields["policy"]))
        after = change.fields.get("step") or fields.get("step")
        step = escalation.next_step(policy, status=status, after=after)
        if step is None:
            body["ladder"] = {"op": "stop", "job": sla_job(plan.elder_id, plan.incident_id)}
        else:
            name, offset = step
            body["ladder"] = {
                "op": "schedule",
                "job": sla_job(plan.elder_id, plan.incident_id),
                "step": name,
                "due": max(float(fields["t0"]) + offset, now),
                "token": secrets.token_hex(8),
            }
    body["feed"].append(
        {
            "type": "incident",
            "data": json.dumps(
                {
                    "status": status,
                    "change": [e.get("type") for e in change.timeline],
                    "actor": actor,
                    "at": stamp,
                    **drills.feed_marks(fields),
                },
                ensure_ascii=False,
            ),
        }
    )
