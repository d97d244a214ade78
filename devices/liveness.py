"""Offline detection: the ticker's handler for ``offline|<elder>|<device>`` jobs.

The ingest script keeps a device's job between half and one ``OFFLINE_AFTER_S`` ahead of
its last message (re-armed through the relay only when it falls behind). When the job
comes due, this handler re-checks under a script (a message may have arrived since the
claim), moves the job on if so, else flips the device offline once (``device_offline``).
Running it twice is harmless: the second run finds the device already offline.
"""

from __future__ import annotations

import json
from typing import Any

import redis
from prometheus_client import Counter

from devices import keys
from locator.core import keys as core_keys
from locator.core import relay
from locator.core.scripts import Script
from locator.core.timers import Job

OFFLINE = Counter("homeward_devices_offline_total", "Devices that went silent")

# Her keys only (one slot): the timer move and the device event go on her relay list.
_MARK_OFFLINE = Script(
    """
local function done(outcome)
  return {outcome, redis.call('LRANGE', KEYS[4], 0, -1)}
end
local state = redis.call('HMGET', KEYS[1], 'online', 'last_seen_ms')
if state[1] == '0' or not state[2] then return done('unchanged') end
if tonumber(ARGV[1]) - tonumber(state[2]) < tonumber(ARGV[2]) then
  -- Heard from since (or its own offline_after_s is longer than the job assumed): check
  -- again when this device's silence would really be too long.
  local due = tonumber(state[2]) + tonumber(ARGV[2])
  redis.call('HSET', KEYS[1], 'offline_due_ms', string.format('%.0f', due))
  redis.call('RPUSH', KEYS[4], cjson.encode({'t', ARGV[5], tostring(due / 1000)}))
  return done('alive')
end
redis.call('HSET', KEYS[1], 'online', '0', 'offline_since_ms', ARGV[1])
local p = redis.call('HMGET', KEYS[2], 'tst', 'lat', 'lon', 'acc')
local fields = {'type', 'device_offline', 'elder_id', ARGV[3], 'device_id', ARGV[4],
  'tst', p[1] or '', 'lat', p[2] or '', 'lon', p[3] or '', 'acc', p[4] or '',
  'received_ms', ARGV[1], 'detail', 'silent since ' .. state[2]}
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', 500, '*', unpack(fields))
-- Her shard's stream has no MAXLEN: the ticker trims it only behind the alerts group.
redis.call('RPUSH', KEYS[4], cjson.encode(
  {'x', 'device-events', 'e:' .. ARGV[3] .. ':events@' .. id, unpack(fields)}))
return done('offline')
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
    elder_id = int(elder)
    result: Any = _MARK_OFFLINE(
        client,
        keys=[
            keys.device_state(elder_id, device_id),
            keys.last_position(elder_id),
            keys.elder_events(elder_id),
            core_keys.relay(elder_id),
        ],
        args=[str(round(now * 1000)), str(after_s * 1000), elder, device_id, job.id],
    )
    outcome = result[0].decode() if isinstance(result[0], bytes) else str(result[0])
    # A crash before this leaves the effects on her list: the job is not completed, so it
    # runs again after its lease and its script returns them once more.
    relay.apply(client, {elder_id: [str(e) for e in result[1]]})
    if outcome == "offline":
        OFFLINE.inc()
    return outcome
