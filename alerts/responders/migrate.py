"""Volunteer and dispatcher records written before their hash tags, renamed once.

Their records, id indexes and phone maps now share ``{vol}`` / ``{disp}`` (``alerts/keys.py``)
so a phone stays unique in one transaction on a Redis Cluster too. A store written before
keeps them under the old names: left there, every volunteer and dispatcher would vanish from
the API and from dispatch. The API and the ticker rename them at start, before serving.
"""

from __future__ import annotations

import re

import redis

from alerts import keys
from locator.core.logging import get_logger
from locator.core.redis import is_cluster

log = get_logger(__name__)

# Old name -> new name of the shared sets; the records are found by pattern.
LEGACY_SETS = {
    "hw:volunteers": keys.VOLUNTEERS,
    "hw:volunteers:phones": keys.VOLUNTEER_PHONES,
    "hw:dispatchers": keys.DISPATCHERS,
    "hw:dispatchers:phones": keys.DISPATCHER_PHONES,
}
_LEGACY_RECORD = re.compile(r"^hw:(volunteer|dispatcher):(\d+)$")


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def to_tags(client: redis.Redis) -> int:
    """Rename what is still under the old names; the number of keys moved (0: nothing left).

    RENAMENX: a second process starting at once, or a re-run after a crash, moves nothing
    twice and overwrites nothing. A cluster never held the old names (registration ran on a
    single Redis until the tags came): there this is a no-op.
    """
    if is_cluster(client):
        return 0
    names = list(LEGACY_SETS.items())
    for kind in ("volunteer", "dispatcher"):
        for raw in client.scan_iter(match=f"hw:{kind}:*", count=1000):
            match = _LEGACY_RECORD.match(_s(raw))
            if match:
                ident = int(match.group(2))
                new = keys.volunteer(ident) if kind == "volunteer" else keys.dispatcher(ident)
                names.append((match.group(0), new))
    moved = 0
    for old, new in names:
        try:
            moved += int(bool(client.renamenx(old, new)))
        except redis.ResponseError:
            continue  # gone meanwhile: another process moved it
    if moved:
        log.info("responders.moved_to_tags", keys=moved)
    return moved
