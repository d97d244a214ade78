-- Apply one decision to one incident, atomically (Redis 6.2, Lua 5.1).
--
-- Every change to an incident goes through here: opening it, a ladder step, an accept,
-- a decline, a resolve. The caller read the incident at some version, decided (pure
-- Python), and asks to commit only if nothing changed since; a ladder step also names the
-- step token it was scheduled with, and a stale token drops the step (no double page).
--
-- KEYS  1 incident (hash)   2 timeline (list)   3 responders (hash)   4 incident attempts (zset)
--       5 timers (zset)     6 the incident's timer (hash)             7 outbox (stream)
--       8 feed (stream)     9 all attempts (zset)                    10 elder's open incident
--      11 open incidents (zset)  12 codes (hash)  13 joined sources (set)  14 attempt sequence
--      15 incidents (zset)  16 incident -> elder (hash)  17 elder's incidents (zset)
--      18.. keys the plan's index entries refer to (by position)
-- ARGV  1 expected version ('' = create)  2 expected step token ('' = not a step)
--       3 plan (JSON)  4 now (epoch seconds)
-- Plan entries that name extra keys ("index" adds, attempt hashes) give their position
-- after KEYS[17]. Returns {'ok', version} | {'conflict', ''} | {'stale', ''} | {'seen', ''} | {'exists', id}

local plan = cjson.decode(ARGV[3])
local id = tostring(plan.incident_id)

if ARGV[1] == '' then
  local open = redis.call('GET', KEYS[10])
  if open then return {'exists', open} end
else
  local v = redis.call('HGET', KEYS[1], 'version')
  if v ~= ARGV[1] then return {'conflict', ''} end
  if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'step_token') ~= ARGV[2] then
    return {'stale', ''}
  end
end
if plan.source and plan.source ~= '' then
  if redis.call('SADD', KEYS[13], plan.source) == 0 then return {'seen', ''} end
end

local version = tonumber(redis.call('HGET', KEYS[1], 'version') or '0') + 1
local fields = {'version', tostring(version)}
for k, v in pairs(plan.fields or {}) do
  if v == cjson.null then redis.call('HDEL', KEYS[1], k)
  else table.insert(fields, k); table.insert(fields, tostring(v)) end
end
redis.call('HSET', KEYS[1], unpack(fields))

if ARGV[1] == '' then
  redis.call('SET', KEYS[10], id)
  redis.call('ZADD', KEYS[11], id, id)
  redis.call('ZADD', KEYS[15], id, id)
  redis.call('HSET', KEYS[16], id, plan.elder_id)
  redis.call('ZADD', KEYS[17], id, id)
  redis.call('HSET', KEYS[12], plan.code, id)
end

for vid, doc in pairs(plan.responders or {}) do
  redis.call('HSET', KEYS[3], vid, doc)
end
for _, entry in ipairs(plan.timeline or {}) do
  redis.call('RPUSH', KEYS[2], entry)
end
for _, add in ipairs(plan.index or {}) do
  local key = KEYS[17 + add[1]]
  if add[2] == 'zadd' then redis.call('ZADD', key, add[3], add[4])
  elseif add[2] == 'srem' then redis.call('SREM', key, add[3])
  else redis.call('SADD', key, add[3]) end
end

-- At most one attempt per (step, recipient, channel): the attempt id is that triple.
local queued = 0
for _, a in ipairs(plan.attempts or {}) do
  local akey = KEYS[17 + a.k]
  if redis.call('EXISTS', akey) == 0 then
    local seq = redis.call('INCR', KEYS[14])
    local af = {'seq', tostring(seq), 'status', 'queued', 'tries', '0', 'created', ARGV[4]}
    for k, v in pairs(a.fields) do table.insert(af, k); table.insert(af, tostring(v)) end
    redis.call('HSET', akey, unpack(af))
    redis.call('ZADD', KEYS[4], seq, a.id)
    redis.call('ZADD', KEYS[9], seq, a.id)
    redis.call('XADD', KEYS[7], '*', 'attempt', a.id)  -- trimmed behind delivery (ticker)
    queued = queued + 1
  end
end

local ladder = plan.ladder or {}
if ladder.op == 'stop' then
  redis.call('ZREM', KEYS[5], ladder.job)
  redis.call('DEL', KEYS[6])
  redis.call('HDEL', KEYS[1], 'step_token', 'next_step', 'next_due')
elseif ladder.op == 'schedule' then
  redis.call('HSET', KEYS[6], 'token', ladder.token, 'payload', cjson.encode({step = ladder.step}))
  redis.call('ZADD', KEYS[5], ladder.due, ladder.job)
  redis.call('HSET', KEYS[1], 'step_token', ladder.token, 'next_step', ladder.step, 'next_due', tostring(ladder.due))
end

if plan.close then
  redis.call('DEL', KEYS[10])
  redis.call('ZREM', KEYS[11], id)
  redis.call('HDEL', KEYS[12], plan.code)
end

for _, event in ipairs(plan.feed or {}) do
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', 10000, '*', 'type', event.type,
    'incident_id', id, 'elder_id', tostring(plan.elder_id), 'version', tostring(version),
    'data', event.data)
end
return {'ok', tostring(version)}
