"""The alerts stage's input: zone transitions and device events become incidents or notices.

Handlers are keyed by event type (as in home-assistant's owntracks); each is idempotent for
one stream entry: an incident records the entry's source it joined, a notice's attempt id
contains it, so a redelivered entry changes nothing.

Both streams are split into shards (``locator/core/shards.py``); the group ``alerts`` reads
every shard. An entry's ``source`` names the elder's own entry it was relayed from
(``e:<elder>:events@<id>``): a relay applied twice writes two shard entries with one source,
and the second is acknowledged as already handled.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import redis

from alerts import keys
from alerts.incidents import service as incidents
from alerts.incidents import storage
from alerts.incidents.config import AlertsConfig
from alerts.notify.attempts import Attempt
from alerts.notify.channels import chain_for
from alerts.notify.messages import render
from alerts.notify.outbox import enqueue
from devices.elders.service import read_elder
from geofences import service as geofences
from locator.core import keys as core_keys
from locator.core import shards, streams
from locator.core.logging import get_logger
from locator.core.redis import StreamEntries, is_cluster, stream_reply

log = get_logger(__name__)

Handler = Callable[[redis.Redis, AlertsConfig, str, dict[str, str]], str]


def _at(fields: dict[str, str]) -> tuple[float, float] | None:
    if fields.get("lat") and fields.get("lon"):
        return float(fields["lat"]), float(fields["lon"])
    return None


def _t0(fields: dict[str, str], cfg: AlertsConfig) -> float:
    """The SLA clock starts when the alarm was confirmed: the confirming message's arrival."""
    received = fields.get("received_ms")
    return float(received) / 1000 if received else cfg.clock.time()


def _open(
    client: redis.Redis, cfg: AlertsConfig, entry_id: str, fields: dict[str, str], trigger: str
) -> str:
    elder = read_elder(client, elder_id=int(fields["elder_id"]))
    if elder is None or not elder.live:
        # An alarm read just before her erasure must not open an incident about her again.
        return "gone"
    _, opened = incidents.open_or_join(
        client,
        cfg,
        elder_id=int(fields["elder_id"]),
        trigger=trigger,
        at=_at(fields),
        actor="system",
        channel=(fields.get("device_id") and "device") or "system",
        source=entry_id,
        t0=_t0(fields, cfg),
    )
    return "opened" if opened else "joined"


def notify_family(
    client: redis.Redis,
    cfg: AlertsConfig,
    *,
    elder_id: int,
    template: str,
    source: str,
    values: dict[str, Any] | None = None,
) -> str:
    """A family-first notice: guardians only, once per source event."""
    elder = read_elder(client, elder_id=elder_id)
    if elder is None:
        return "gone"
    now = cfg.clock.time()
    text = render(template, cfg.locale, {"name": elder.name, **(values or {})})
    scope = "n" + source.replace(".", "_")
    pipe = client.pipeline(transaction=False)
    for index, guardian in enumerate(elder.guardians):
        recipient = f"guardian:{index}"
        chain = chain_for(recipient, set(cfg.channels))
        if not chain:
            continue
        attempt = Attempt(
            elder_id=elder_id,
            scope=scope,
            step=template,
            recipient=recipient,
            phone=guardian.phone,
            channel=chain[0],
            template=template,
            text=text,
            locale=cfg.locale,
            data=json.dumps({"elder_id": elder_id, "notice": template}),
        )
        enqueue(pipe, attempt=attempt.id, now=now, fields=attempt.record())
    notice = json.dumps(
        {"type": template, "text": text, "source": source, "at": now}, ensure_ascii=False
    )
    pipe.lpush(keys.elder_notices(elder_id), notice)
    pipe.ltrim(keys.elder_notices(elder_id), 0, 199)
    pipe.xadd(
        keys.FEED,
        {
            "type": "notice",
            "incident_id": "",
            "elder_id": str(elder_id),
            "version": "",
            "data": notice,
        },
        maxlen=10_000,
        approximate=True,
    )
    pipe.execute()
    return f"notice:{template}"


# --- zone transitions ----------------------------------------------------------------------
def on_transition(
    client: redis.Redis, cfg: AlertsConfig, entry_id: str, fields: dict[str, str]
) -> str:
    kind = fields.get("kind")
    elder_id = int(fields["elder_id"])
    if kind == "danger_enter":
        return _open(client, cfg, entry_id, fields, "danger_enter")
    if kind == "zone_exit":
        if fields.get("outside_all_safe") != "1":
            return "still_inside_another"
        return _open(client, cfg, entry_id, fields, "zone_exit")
    if kind == "zone_enter":
        incident_id = storage.open_incident_id(client, elder_id)
        if incident_id is None:
            return "no_incident"
        if fields.get("zone_id") not in geofences.home_zone_ids(client, elder_id=elder_id):
            return "not_home"
        return "returned_home:" + incidents.returned_home(
            client, cfg, incident_id=incident_id, source=entry_id
        )
    return "ignored"


# --- device events ---------------------------------------------------------------------------
def _join_if_open(
    client: redis.Redis, cfg: AlertsConfig, entry_id: str, fields: dict[str, str], trigger: str
) -> str | None:
    incident_id = storage.open_incident_id(client, int(fields["elder_id"]))
    if incident_id is None:
        return None
    incidents.join(
        client,
        cfg,
        incident_id=incident_id,
        trigger=trigger,
        at=_at(fields),
        actor="system",
        channel="device",
        source=entry_id,
    )
    return "joined"


def on_device_event(
    client: redis.Redis, cfg: AlertsConfig, entry_id: str, fields: dict[str, str]
) -> str:
    kind = fields.get("type", "")
    elder_id = int(fields["elder_id"])
    if kind in ("sos", "fall"):
        return _open(client, cfg, entry_id, fields, kind)
    if kind == "removed":
        if geofences.is_inside_safe_zone(client, elder_id=elder_id):
            return _join_if_open(client, cfg, entry_id, fields, kind) or notify_family(
                client, cfg, elder_id=elder_id, template="removed_home", source=entry_id
            )
        return _open(client, cfg, entry_id, fields, "removed")
    if kind == "device_offline":
        joined = _join_if_open(client, cfg, entry_id, fields, kind)
        if joined:
            return joined
        if geofences.is_inside_safe_zone(client, elder_id=elder_id):
            return notify_family(
                client, cfg, elder_id=elder_id, template="offline_home", source=entry_id
            )
        return _open(client, cfg, entry_id, fields, "device_offline")
    if kind == "low_battery":
        _join_if_open(client, cfg, entry_id, fields, kind)
        battery = fields.get("detail", "").split("%")[0] or fields.get("battery", "?")
        return notify_family(
            client,
            cfg,
            elder_id=elder_id,
            template="low_battery",
            source=entry_id,
            values={"battery": battery},
        )
    if kind == "device_online":
        joined = _join_if_open(client, cfg, entry_id, fields, kind)
        return joined or notify_family(
            client, cfg, elder_id=elder_id, template="back_online", source=entry_id
        )
    if kind == "device_lastwill":
        return _join_if_open(client, cfg, entry_id, fields, kind) or "ignored"
    return "ignored"


HANDLERS: dict[str, Handler] = {
    "transitions": on_transition,
    "device-events": on_device_event,
}
GROUP = "alerts"


def streams_read() -> list[str]:
    """Every stream the alerts stage consumes: each kind in every shard."""
    # The relay's alarm streams by kind (what geofences and devices leave for alerts).
    return [core_keys.shard_stream(kind, shard) for shard in shards.every() for kind in HANDLERS]


def _kind(stream: str) -> str:
    return stream.rsplit(":", 1)[-1]


def source_of(stream: str, entry_id: str, fields: dict[str, str]) -> str:
    """What the entry is about: the relayed elder entry, else this shard entry itself."""
    if fields.get("source"):
        return fields["source"]
    shard = stream.split("{s:", 1)[-1].split("}", 1)[0]
    return f"s{shard}:{_kind(stream)}@{entry_id}"


def ensure_groups(client: redis.Redis) -> None:
    for stream in streams_read():
        try:
            # "$": an alerts stage starting for the first time does not page for history.
            client.xgroup_create(stream, GROUP, id="$", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


def _read_new(client: redis.Redis, consumer: str, block_ms: int) -> list[tuple[str, StreamEntries]]:
    """New entries of every shard: one blocking read on one Redis; on a cluster (no command
    spans slots) one read per shard, pipelined per node, and a pause when all were empty."""
    names = streams_read()
    if not is_cluster(client):
        reply = client.xreadgroup(
            GROUP,
            consumer,
            dict.fromkeys(names, ">"),
            count=100,
            block=block_ms or None,  # 0: do not wait (XREADGROUP BLOCK 0 waits forever)
        )
        return stream_reply(reply)
    pipe = client.pipeline(transaction=False)
    for stream in names:
        pipe.xreadgroup(GROUP, consumer, {stream: ">"}, count=100)
    batches = [b for reply in pipe.execute() for b in stream_reply(reply) if b[1]]
    if not batches and block_ms:
        time.sleep(block_ms / 1000)
    return batches


def consume_once(
    client: redis.Redis,
    cfg: AlertsConfig,
    *,
    consumer: str,
    block_ms: int = 200,
    claim: bool = False,
) -> int:
    """Handle one batch of new (or, with ``claim``, abandoned) entries; ack each after it."""
    batches: list[tuple[str, StreamEntries]] = []
    now = cfg.clock.time()
    if claim:
        for stream in streams_read():
            claimed = streams.claim(
                client, stream=stream, group=GROUP, consumer=consumer, min_idle_ms=30_000, now=now
            )
            batches.append((stream, claimed))
    batches.extend(_read_new(client, consumer, block_ms))
    handled = 0
    for stream_name, entries in batches:
        # An alarm deleted before it was handled is an error to see, never a silent ack.
        entries = streams.live_entries(client, entries, stream=stream_name, group=GROUP, now=now)
        for entry_id, fields in entries:
            source = source_of(stream_name, entry_id, fields)
            if not client.exists(keys.alarm_handled(source)):
                try:
                    result = HANDLERS[_kind(stream_name)](client, cfg, source, fields)
                except redis.RedisError:
                    raise  # not acked: handled again after the outage
                except Exception:
                    # Not acked: an alarm is never dropped; it is retried when claimed again
                    # and, meanwhile, later alarms go on being handled.
                    log.exception("alarm_failed", stream=stream_name, entry=entry_id)
                    continue
                # Handled: a redelivery (crash before the ack) or the same alarm relayed
                # twice must not open a second incident should the first one be closed.
                client.set(keys.alarm_handled(source), result, ex=86_400)
                log.info(
                    "alarm",
                    stream=stream_name,
                    entry=entry_id,
                    source=source,
                    type=fields.get("type") or fields.get("kind"),
                    result=result,
                )
            client.xack(stream_name, GROUP, entry_id)
            handled += 1
    return handled
