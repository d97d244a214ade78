-- Apply one decision to one incident, atomically (Redis 6.2, Lua 5.1).
--
-- Every change to an incident goes through here: opening it, a ladder step, an accept,
-- a decline, a resolve. The caller read the incident at some version, decided (pure
-- Python), and asks to commit only if nothing changed since; a ladder step also names the
-- step token it was scheduled with, and a stale token drops the step (no double page).
--
-- Every key is hers (one hash slot of a Redis Cluster). What the change means for shared
-- keys (the outbox shard, the feed, the ladder's timer, the global incident and attempt
-- indexes) goes on her relay list, which the caller applies (locator/core/relay.py).
--
-- KEYS  1 incident (hash)   2 timeline (list)   3 responders (hash)   4 incident attempts (zset)
--       5 her relay (list)  6 her open incident (or drill) pointer    7 joined sources (set)
--       8 her attempt sequence   9 her incidents (zset)
--      10.. her keys the plan's index entries and attempts refer to (by position)
-- ARGV  1 expected version ('' = create)  2 expected step token ('' = not a step)
--       3 plan (JSON)  4 now (epoch seconds)
-- Plan entries that name extra keys ("index" adds, attempt hashes) give their position
-- after KEYS[9]; plan.relay holds the caller's effects on shared keys (JSON, as relayed).
-- Returns {verdict, detail, her relay list...}: 'ok' version | 'conflict' | 'stale' | 'seen' |
-- 'exists' id

local FIXED = 9
local plan = cjson.decode(ARGV[3])
local id = tostring(plan.incident_id)

-- Every answer carries her relay list: a call that changes nothing (a redelivered alarm
-- answers 'seen') still applies what a caller killed after its commit left there.
local function answer(verdict, detail)
  local reply = {verdict, detail}
  for _, entry in ipairs(redis.call('LRANGE', KEYS[5], 0, -1)) do reply[#reply + 1] = entry end
  return reply
end

if ARGV[1] == '' then
  local open = redis.call('GET', KEYS[6])
  if open then return answer('exists', open) end
else
  local v = redis.call('HGET', KEYS[1], 'version')
  if v ~= ARGV[1] then return answer('conflict', '') end
  if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'step_token') ~= ARGV[2] then
    return answer('stale', '')
  end
end
if plan.source and plan.source ~= '' then
  if redis.call('SADD', KEYS[7], plan.source) == 0 then return answer('seen', '') end
end

local version = tonumber(redis.call('HGET', KEYS[1], 'version') or '0') + 1
local fields = {'version', tostring(version)}
for k, v in pairs(plan.fields or {}) do
  if v == cjson.null then redis.call('HDEL', KEYS[1], k)
  else table.insert(fields, k); table.insert(fields, tostring(v)) end
end
redis.call('HSET', KEYS[1], unpack(fields))

if ARGV[1] == '' then
  redis.call('SET', KEYS[6], id)
  redis.call('ZADD', KEYS[9], id, id)
end

for vid, doc in pairs(plan.responders or {}) do
  redis.call('HSET', KEYS[3], vid, doc)
end
for _, entry in ipairs(plan.timeline or {}) do
  redis.call('RPUSH', KEYS[2], entry)
end
for _, add in ipairs(plan.index or {}) do
  local key = KEYS[FIXED + add[1]]
  if add[2] == 'zadd' then redis.call('ZADD', key, add[3], add[4])
  elseif add[2] == 'srem' then redis.call('SREM', key, add[3])
  else redis.call('SADD', key, add[3]) end
end

local relay = {}
for _, effect in ipairs(plan.relay or {}) do relay[#relay + 1] = effect end

-- At most one attempt per (step, recipient, channel): the attempt id is that triple. Only
-- an attempt created here is relayed to the outbox (and the relay queues it once).
local ms = math.floor(tonumber(ARGV[4]) * 1000)
for _, a in ipairs(plan.attempts or {}) do
  local akey = KEYS[FIXED + a.k]
  if redis.call('EXISTS', akey) == 0 then
    local seq = redis.call('INCR', KEYS[8])
    local af = {'seq', tostring(seq), 'status', 'queued', 'tries', '0', 'created', ARGV[4]}
    for k, v in pairs(a.fields) do table.insert(af, k); table.insert(af, tostring(v)) end
    redis.call('HSET', akey, unpack(af))
    redis.call('ZADD', KEYS[4], seq, a.id)
    relay[#relay + 1] = cjson.encode({'z', plan.attempts_index,
      string.format('%.0f', ms * 1000 + seq % 1000), a.id})
    relay[#relay + 1] = cjson.encode({'o', a.id})
  end
end

local ladder = plan.ladder or {}
if ladder.op == 'stop' then
  redis.call('HDEL', KEYS[1], 'step_token', 'next_step', 'next_due')
elseif ladder.op == 'schedule' then
  redis.call('HSET', KEYS[1], 'step_token', ladder.token, 'next_step', ladder.step, 'next_due', tostring(ladder.due))
end

if plan.close then
  redis.call('DEL', KEYS[6])
end

for n, event in ipairs(plan.feed or {}) do
  relay[#relay + 1] = cjson.encode({'f', id .. ':' .. version .. ':' .. n,
    'type', event.type, 'incident_id', id, 'elder_id', tostring(plan.elder_id),
    'version', tostring(version), 'data', event.data})
end

if #relay > 0 then redis.call('RPUSH', KEYS[5], unpack(relay)) end
return answer('ok', tostring(version))
