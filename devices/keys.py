"""The devices domain's Redis keys: elders, bracelets, stock, the TCP gateway, what the ingest
stores (positions, tracks, device state, dedupe, events, photos, fast mode, follow-ups) and the
shards of device events. Only ``devices`` imports this module (import-linter contract);
the other domains go through its readers. The hash-tag rules are ``locator/core/keys.py``'s.
"""

from __future__ import annotations

import re

from locator.core import shards
from locator.core.keys import elder_tag, shard_stream

ELDERS = "hw:elders"  # zset id -> id, every live elder


def elder(elder_id: int) -> str:
    return f"hw:{elder_tag(elder_id)}:elder"


def elder_device(elder_id: int) -> str:
    return f"hw:{elder_tag(elder_id)}:device"


def access_log(elder_id: int) -> str:
    """Stream (ids = app-clock ms) of who read or changed her data; trimmed by time."""
    return f"hw:{elder_tag(elder_id)}:access"


def access_log_recent(elder_id: int, digest: str) -> str:
    """When (app-clock ms) a read was last logged: a page's 15 s polls log it once."""
    return f"hw:{elder_tag(elder_id)}:access:recent:{digest}"


def owner_elders(owner: str) -> str:
    return f"hw:owner:{owner}:elders"


DEVICES = "hw:devices"  # zset (score 0) of device ids, lexicographic


def device(device_id: str) -> str:
    return f"hw:device:{device_id}"


def device_external(protocol: str, external_id: str) -> str:
    return f"hw:device:ext:{protocol}:{external_id}"


# Bracelets in stock: a record per bracelet that has a claim code (kept while it is bound,
# so unbinding returns it with the same code), and the set of those not bound right now.
DEVICE_STOCK = "hw:stock"  # zset (score 0) of unbound stocked device ids, lexicographic


def device_stock(device_id: str) -> str:
    """Hash: protocol, hash of the claim code printed on the box, created_at."""
    return f"hw:stock:device:{device_id}"


def claim_attempts(device_id: str) -> str:
    """Claim attempts on one bracelet in the current hour (429 past the limit)."""
    return f"hw:stock:claims:{device_id}"


def device_state(elder_id: int, device_id: str) -> str:
    """last_seen, battery, online: written by the ingest in the same commit as the fix."""
    return f"hw:{elder_tag(elder_id)}:devstate:{device_id}"


def track(elder_id: int, device_id: str) -> str:
    return f"hw:{elder_tag(elder_id)}:track:{device_id}"


_TRACK = re.compile(r"^hw:\{e:(\d+)\}:track:(.+)$")


def track_owner(key: str) -> tuple[int, str] | None:
    """(elder_id, device_id) of a track key; None for any other key."""
    match = _TRACK.match(key)
    return (int(match.group(1)), match.group(2)) if match else None


def last_position(elder_id: int) -> str:
    return f"hw:{elder_tag(elder_id)}:pos"


def device_tag(device_id: str) -> str:
    return f"{{d:{device_id}}}"


def gateway_device(device_id: str) -> str:
    """Hash: auth_code (JT/T 808), gateway/connected_at/disconnected_at, last_command(_at),
    last_answer(_at): what the console shows about a gateway bracelet."""
    return f"hw:gw:{device_tag(device_id)}:state"


def gateway_holder(device_id: str) -> str:
    """The gateway process holding the bracelet's connection (expires unless refreshed)."""
    return f"hw:gw:{device_tag(device_id)}:holder"


def gateway_pending(device_id: str) -> str:
    """Hash action -> command JSON waiting for the bracelet's next connection (10 min)."""
    return f"hw:gw:{device_tag(device_id)}:pending"


def fix_dedupe(elder_id: int, device_id: str) -> str:
    """Recent message ids of a device (zset scored by minus the arrival time, newest first),
    so a redelivered fix is not stored twice."""
    return f"hw:{elder_tag(elder_id)}:dedupe:{device_id}"


def elder_events(elder_id: int) -> str:
    """The elder's own capped stream of device events (alarms, low battery, last will)."""
    return f"hw:{elder_tag(elder_id)}:events"


def device_events(shard: int) -> str:
    """A shard of the device events the alerts stage consumes (group ``alerts``)."""
    return shard_stream("device-events", shard)


DEVICES_VERSION = "hw:devices:version"  # bumped on every (un)registration: ingest cache check


def archive_mark(shard: int) -> str:
    """The track mover's place in the shard's retention index: the score it has looked up to."""
    return f"hw:{shards.tag(shard)}:archive:mark"


def elder_track_devices(elder_id: int) -> str:
    """Every device that ever reported for this elder (their tracks outlive the binding)."""
    return f"hw:{elder_tag(elder_id)}:trackdevices"


def fast_mode(elder_id: int) -> str:
    """Set while an elder's bracelet reports fast after a first fix outside (one window)."""
    return f"hw:{elder_tag(elder_id)}:fastmode"


def elder_photo(elder_id: int) -> str:
    """Hash: an uploaded photo of the elder (``type``, base64 ``data``, ``sha``)."""
    return f"hw:{elder_tag(elder_id)}:photo"


def follow_ups(elder_id: int) -> str:
    """Zset of the times an unsure fix made us ask a slow bracelet for one more fix."""
    return f"hw:{elder_tag(elder_id)}:followups"
