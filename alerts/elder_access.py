"""Which volunteers may read an elder's record: alerts' answer, handed to devices at start.

A volunteer reads her while sent to her open incident, or while paired with her and sent
once (the readers set): checked on every read, so closing or unpairing ends it at once even
if the readers set kept a stale member. Devices asks through ``register_volunteer_check``
(it never imports alerts); the shell registers ``CHECK`` when it builds the app.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis

from alerts import keys
from devices.elders.service import VolunteerCheck
from locator.core import store


def _queue(pipe: Any, elder_id: int, volunteer_id: int) -> None:
    pipe.get(keys.open_incident(elder_id))
    pipe.sismember(keys.elder_readers(elder_id), str(volunteer_id))
    pipe.sismember(keys.volunteer_pairs(volunteer_id), str(elder_id))


def _open_responders(elder_id: int, open_id: object) -> str | None:
    text = store.text(open_id)
    return keys.incident_responders(elder_id, int(text)) if text and text.isdigit() else None


async def volunteer_may_read(redis: aioredis.Redis, *, elder_id: int, volunteer_id: int) -> bool:
    """Whether the volunteer is sent to her open incident, or paired with her and sent once."""
    async with redis.pipeline(transaction=False) as pipe:
        _queue(pipe, elder_id, volunteer_id)
        open_id, reader, paired = await pipe.execute()
    if reader and paired:
        return True
    responders = _open_responders(elder_id, open_id)
    return bool(responders and await redis.hexists(responders, str(volunteer_id)))


def volunteer_may_read_sync(client: redis.Redis, *, elder_id: int, volunteer_id: int) -> bool:
    """``volunteer_may_read`` for the synchronous callers (same rules)."""
    pipe = client.pipeline(transaction=False)
    _queue(pipe, elder_id, volunteer_id)
    open_id, reader, paired = pipe.execute()
    if reader and paired:
        return True
    responders = _open_responders(elder_id, open_id)
    return bool(responders and client.hexists(responders, str(volunteer_id)))


CHECK = VolunteerCheck(may_read=volunteer_may_read, may_read_sync=volunteer_may_read_sync)
