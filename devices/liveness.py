"""Offline detection: the ticker's handler for ``offline|<elder>|<device>`` jobs.

The ingest script pushes a device's job to ``last message + OFFLINE_AFTER_S`` on every
message. When the job comes due, this handler re-checks under a script (a message may have
arrived since the claim) and flips the device offline once, emitting ``device_offline``.
Running it twice is harmless: the second run finds the device already offline.
"""

from __future__ import annotations

import json

import redis
from prometheus_client import Counter

from locator.core import keys
from locator.core.scripts import Script
from locator.core.timers import Job

OFFLINE = Counter("homeward_devices_offline_total", "Devices that went silent")

_MARK_OFFLINE = Script(
    """
local state = redis.call('HMGET', KEYS[1], 'online', 'last_seen_ms')
if state[1] == '0' or not state[2] then return 'unchanged' end
if tonumber(ARGV[1]) - tonumber(state[2]) < tonumber(ARGV[2]) then
  -- Heard from since (or its own offline_after_s is longer than the job assumed): check
  -- again when this device's silence would really be too long.
  redis.call('ZADD', KEYS[5], (tonumber(state[2]) + tonumber(ARGV[2])) / 1000, ARGV[5])
  return 'alive'
end
redis.call('HSET', KEYS[1], 'online', '0', 'offline_since_ms', ARGV[1])
local p = redis.call('HMGET', KEYS[2], 'tst', 'lat', 'lon', 'acc')
local fields = {'type', 'device_offline', 'elder_id', ARGV[3], 'device_id', ARGV[4],
  'tst', p[1] or '', 'lat', p[2] or '', 'lon', p[3] or '', 'acc', p[4] or '',
  'received_ms', ARGV[1], 'detail', 'silent since ' .. state[2]}
redis.call('XADD', KEYS[3], 'MAXLEN', '~', 500, '*', unpack(fields))
-- No MAXLEN: the ticker trims device events only behind the alerts group.
redis.call('XADD', KEYS[4], '*', unpack(fields))
return 'offline'
""",
    name="mark_offline",
)


def handle_offline(client: redis.Redis, job: Job, *, now: float, default_after_s: int) -> str:
    """Mark the job's device offline if it has really been silent; returns what happened."""
    elder, device_id = job.args
    raw = client.get(keys.device(device_id))
    if raw is None:
        return "gone"  # unregistered since: nothing to watch
    doc = json.loads(raw)
    if int(doc["elder_id"]) != int(elder):
        return "gone"  # re-bound to another elder: that binding has its own job
    after_s = doc.get("offline_after_s") or default_after_s
    result = _MARK_OFFLINE(
        client,
        keys=[
            keys.device_state(int(elder), device_id),
            keys.last_position(int(elder)),
            keys.elder_events(int(elder)),
            keys.DEVICE_EVENTS,
            keys.TIMERS,
        ],
        args=[str(round(now * 1000)), str(after_s * 1000), elder, device_id, job.id],
    )
    outcome = result.decode() if isinstance(result, bytes) else str(result)
    if outcome == "offline":
        OFFLINE.inc()
    return outcome
