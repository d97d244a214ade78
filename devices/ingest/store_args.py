"""One uplink's call of the ingest's store script: its keys and arguments, in the order
``store_uplink.lua``'s header numbers them."""

from __future__ import annotations

from devices import keys
from devices.ingest.batch import DEAD_LETTER_PAYLOAD_CHARS, Pending
from devices.ingest.codecs import Fix, Heartbeat, LastWill, is_low_quality
from devices.ingest.identity import fix_id_from_texts, message_id
from devices.ingest.store_script import FixEvaluator
from locator.core import keys as core_keys


def script_number(value: float | None) -> str:
    """A number as the script reads it (repr: a float round-trips); '' for none."""
    return "" if value is None else repr(value)


def store_call(
    item: Pending,
    *,
    evaluator: FixEvaluator | None,
    retention_ms: int,
    max_speed: str,
    low_battery: str,
    offline_after_s: int,
) -> tuple[list[str], list[str]]:
    """The store script's KEYS and ARGV for one uplink (``store_uplink.lua``'s header);
    prepares the fix's zone update on ``item`` when her zones are watched."""
    target, uplink, message = item.target, item.uplink, item.message
    elder, device = target.elder_id, target.device_id
    script_keys = [
        keys.elder_device(elder),
        keys.last_position(elder),
        keys.track(elder, device),
        keys.device_state(elder, device),
        keys.fix_dedupe(elder, device),
        keys.elder_events(elder),
        core_keys.relay(elder),
    ]
    if evaluator is not None:
        # The zone stage's keys are geofences' names; without it the script never
        # reaches them (no update is ever passed), so they are not declared.
        script_keys += evaluator.script_keys(elder)
    item.zone_update = None
    fields: tuple[str, ...]  # ARGV 7-17
    if isinstance(uplink, Fix):
        kind = "location"
        low_quality = is_low_quality(uplink)
        if (
            evaluator is not None
            and not message.retain
            and not item.skip_zones
            and evaluator.watches(elder)
        ):
            item.zone_update = evaluator.prepare(item.position(), low_quality=low_quality)
        tst, lat, lon = repr(uplink.tst), repr(uplink.lat), repr(uplink.lon)
        fields = (
            fix_id_from_texts(device, tst, lat, lon, uplink.alarm),
            tst,
            lat,
            lon,
            script_number(uplink.acc),
            uplink.src,
            script_number(uplink.vel),
            script_number(uplink.cog),
            script_number(uplink.batt),
            uplink.alarm or "",
            "1" if low_quality else "0",
        )
    elif isinstance(uplink, Heartbeat):
        kind = "heartbeat"
        # A salvaged alarm gets its own id: the rejected fix it came with is not it.
        own_id = message_id(device, message.payload, ":alarm" if item.salvaged else "")
        blanks = ("", "", "", "", "", "")
        salvaged = "1" if item.salvaged else "0"
        fields = (own_id, script_number(uplink.tst), *blanks, script_number(uplink.batt))
        fields += (uplink.alarm or "", salvaged)
    else:
        assert isinstance(uplink, LastWill)
        kind = "lastwill"
        own_id = message_id(device, message.payload)
        fields = (own_id, script_number(uplink.tst), "", "", "", "", "", "", "", "", "0")
    if item.zone_update is not None:
        zones = item.zone_update.args()
    else:
        zones = ("", "break" if item.skip_zones and isinstance(uplink, Fix) else "")
    offline_after_s = target.offline_after_s or offline_after_s  # hers, or the default
    received_ms = round(message.received_at * 1000)
    args = [
        kind,
        device,
        str(elder),
        str(received_ms),
        str(received_ms - retention_ms),  # the track's MINID
        max_speed,
        *fields,
        low_battery,
        message.topic[:200],
        message.payload[:DEAD_LETTER_PAYLOAD_CHARS].decode("utf-8", "replace"),
        str(offline_after_s * 1000),
        "1" if message.retain else "0",
        *zones,
    ]
    return script_keys, args
