"""Starting drills: now, or at a set time through the timers (the ticker's ``drill`` job).

Staff only. An announced drill's family gets one drill-marked notice when it is set up
(before it starts, for a scheduled one); the drill itself opens through the same
``open_or_join`` as a missing report, with the drill's fields (alerts/incidents/drills.py).
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

import redis

from alerts import intake, keys
from alerts.incidents import drills, service
from alerts.incidents.config import AlertsConfig
from alerts.incidents.schemas import DrillScheduled
from devices.elders.service import read_elder
from locator.core import timers
from locator.core.auth import Principal
from locator.core.clock import isoformat
from locator.core.errors import Conflict, Forbidden, NotFound
from locator.core.logging import get_logger

log = get_logger(__name__)

JOB = "drill"
# A start time this close to now is "now": no timer round trip for a few seconds.
NOW_WITHIN_S = 5.0


def _when(cfg: AlertsConfig, at: float) -> str:
    local = datetime.fromtimestamp(at, tz=cfg.timezone)
    return local.strftime("%m-%d %H:%M") if cfg.locale == "en" else local.strftime("%m月%d日%H:%M")


def _elder_alive(client: redis.Redis, elder_id: int) -> bool:
    elder = read_elder(client, elder_id=elder_id)
    return elder is not None and elder.live


def _tell_family(client: redis.Redis, cfg: AlertsConfig, *, elder_id: int, at: float) -> None:
    nonce = secrets.token_hex(4)
    intake.notify_family(
        client,
        cfg,
        elder_id=elder_id,
        template="drill_notice",
        source=f"drill_{nonce}",
        values={"when": _when(cfg, at)},
    )


def start(
    client: redis.Redis,
    cfg: AlertsConfig,
    *,
    caller: Principal,
    elder_id: int,
    note: str,
    announced: bool,
    start_at: float | None,
    at: tuple[float, float] | None,
) -> int | DrillScheduled:
    """Open a drill now (its incident id) or schedule it (what was scheduled); staff only."""
    if not caller.is_staff:
        raise Forbidden("only a dispatcher starts a drill")
    if not _elder_alive(client, elder_id):
        raise NotFound(f"elder {elder_id} not found")
    now = cfg.clock.time()
    actor = service.actor_of(caller)
    if start_at is not None and start_at > now + NOW_WITHIN_S:
        job = timers.job_id(JOB, elder_id, secrets.token_hex(4))
        payload = {
            "announced": announced,
            "note": note,
            "actor": actor,
            "at": at,
            "start_at": start_at,
        }
        timers.schedule(client, job, due=start_at, payload=payload)
        if announced:
            _tell_family(client, cfg, elder_id=elder_id, at=start_at)
        log.info("drill_scheduled", elder_id=elder_id, job=job, announced=announced)
        return DrillScheduled(
            elder_id=elder_id,
            start_at=isoformat(datetime.fromtimestamp(start_at, tz=cfg.timezone)),
            announced=announced,
            job=job,
        )
    if drills.drill_id(client, elder_id) is not None:
        raise Conflict(f"a drill is already running for elder {elder_id}")
    if announced:
        _tell_family(client, cfg, elder_id=elder_id, at=now)
    incident_id, _ = service.open_or_join(
        client,
        cfg,
        elder_id=elder_id,
        trigger="missing",
        at=at,
        actor=actor,
        channel="api",
        note=note,
        drill=drills.fields(announced=announced, scheduled_for=None),
    )
    return incident_id


def run_scheduled(client: redis.Redis, cfg: AlertsConfig, job: timers.Job) -> str:
    """The ticker's ``drill`` job: open the drill it names (once), unless she is gone."""
    elder_id = int(job.args[0])
    done = keys.alarm_handled(f"{JOB}@{job.id}")
    if client.exists(done):
        return "done"  # a re-claimed job that already ran
    if not _elder_alive(client, elder_id):
        return "gone"
    payload: dict[str, Any] = job.payload
    place = payload.get("at")
    scheduled = float(payload["start_at"]) if payload.get("start_at") else None
    try:
        incident_id, _ = service.open_or_join(
            client,
            cfg,
            elder_id=elder_id,
            trigger="missing",
            at=(float(place[0]), float(place[1])) if place else None,
            actor=str(payload.get("actor") or "system"),
            channel="timer",
            note=str(payload.get("note") or ""),
            drill=drills.fields(
                announced=bool(payload.get("announced", True)), scheduled_for=scheduled
            ),
        )
    except Conflict:
        log.warning("drill_skipped", elder_id=elder_id, job=job.id, reason="a drill is running")
        return "busy"
    client.set(done, str(incident_id), ex=86_400)
    log.info("drill_started", elder_id=elder_id, incident_id=incident_id, due=scheduled)
    return "opened"
