-- Store one decoded uplink for one elder, atomically (Redis 6.2, Lua 5.1).
--
-- KEYS  1 elder's device binding   2 last position (hash)   3 track (stream)
--       4 device state (hash)      5 recent message ids (zset by arrival)
--       6 elder's events (stream)  7 elder's relay (list)
--       with a zone stage only (geofences' keys, named by its evaluator's script_keys):
--       8 zone state (hash, with v)  9 elder's transitions (stream)
-- The two "-- @zones" lines are where geofences' pieces go (geofences/zone_commit.lua,
-- assembled by devices/ingest/pipeline.py's ``assemble``); left as comments, the script
-- stores fixes with no zone stage.
-- Every key is hers (one hash slot). What she feeds into shared keys (the shard streams of
-- transitions and device events, her offline timer, the retention index, dead letters) is
-- appended to her relay list as JSON effects, which the caller applies and trims
-- (locator/core/relay.py): a Redis Cluster refuses a script that spans slots.
-- ARGV  1 kind (location|heartbeat|lastwill)  2 device_id  3 elder_id  4 received_ms
--       5 the track's MINID (received_ms - retention_ms)  6 max_speed_kmh  7 message id  8 tst  9 lat  10 lon  11 acc  12 src
--       13 vel  14 cog  15 batt  16 alarm  17 low_quality (1|0)  18 low_battery_pct
--       19 topic  20 payload (truncated, for the dead letter)  21 offline_after_ms
--       22 retained (1|0: the broker replayed a stored message on subscribe)
--       23 expected zone-state version ('' = no zone update)
--       24 zone update (JSON; '' = checked only, nothing changes; 'break' with no version:
--          stored unevaluated, every hysteresis streak broken)
-- Returns {verdict, detail, relay}: relay is what this call pushed when her list was empty
-- before, else her whole list (also effects a crashed caller left behind); a call that
-- relays nothing returns {verdict, detail} and leaves the list unread. Leftovers still get
-- applied: a redelivered message answers duplicate, whose dead letter returns the whole
-- list, and the ticker's sweep applies what an intent nobody released left
-- (locator/core/relay.py). verdict is stored | stored_late | stored_flagged | seen |
-- retained | duplicate | too_fast | stale_route | zone_conflict; detail 'zones' when the
-- zone update was applied with the fix.
--
-- It runs once per message at province scale: every hash is read once and written once (a
-- field only when it changes), and a steady fix of a known device costs eight commands.
-- Numbers cost: redis.call formats a number argument (%.17g) and tonumber parses with
-- strtod, each more than a small command; constant arguments are strings, and what Python
-- can compute it sends (the track's MINID).

local kind, device, elder = ARGV[1], ARGV[2], ARGV[3]
local received_ms = ARGV[4]
local now_ms = tonumber(received_ms)
local alarm, batt = ARGV[16], ARGV[15]
local retained = ARGV[22] == '1'
local device_alarm = alarm == 'sos' or alarm == 'fall' or alarm == 'removed'
local effects = {}

-- Effects go onto her relay list in one RPUSH when the call ends.
local function relay(effect)
  effects[#effects + 1] = cjson.encode(effect)
end

local function done(verdict, detail)
  -- Most fixes relay nothing: reading her list for them would be a command per fix spent
  -- on leftovers that the redelivery and the sweep already apply.
  if #effects == 0 then return {verdict, detail} end
  -- The list is exactly what was pushed when its length says it held nothing before.
  if redis.call('RPUSH', KEYS[7], unpack(effects)) == #effects then
    return {verdict, detail, effects}
  end
  return {verdict, detail, redis.call('LRANGE', KEYS[7], '0', '-1')}
end

local function dead_letter(reason, detail)
  relay({'r', 'reason', reason, 'detail', detail, 'topic', ARGV[19], 'payload', ARGV[20],
    'device_id', device, 'elder_id', elder, 'received_ms', received_ms})
end

-- The binding is checked here so a deleted or re-bound device never writes into an elder
-- it no longer belongs to, whatever the caller's registry cache believes.
if redis.call('GET', KEYS[1]) ~= device then
  return {'stale_route', ''}
end

-- Every message is processed once: a QoS 1 redelivery, or a bracelet repeating itself, finds
-- its id among the last 64 arrivals (scored by arrival, so a burst of buffered fixes stays).
-- The score is minus the arrival time, newest first: a small sorted set is one flat list,
-- and a new id goes in after every lower score, so at the tail it costs a walk reading
-- each entry's score (1-2 us at 64-96 ids), at the head none. Ids scored the older way
-- (plus) sort after all of them and are trimmed first, as the oldest they are.
local message_id = ARGV[7]
if redis.call('ZADD', KEYS[5], 'NX', '-' .. received_ms, message_id) == 0 then
  if retained then return done('retained', '') end
  dead_letter('duplicate', 'this message was already processed')
  return done('duplicate', '')
end
-- Refused before anything else is written: its id goes too, so its retry is not a duplicate.
local function refuse(verdict)
  redis.call('ZREM', KEYS[5], message_id)
  return {verdict, ''}
end
-- @zones check (geofences' piece: a stale zone-state version answers zone_conflict)
if redis.call('ZCARD', KEYS[5]) > 96 then
  redis.call('ZREMRANGEBYRANK', KEYS[5], '64', '-1')
end

-- The first write to a per-elder stream enters it in the retention index (NX keeps the
-- oldest time); the ticker's sweep trims what is due, moves the score on, and deletes a
-- stream it empties with its index entry: a stream that exists is indexed, so only a new
-- one is relayed (not a global write per fix). NOMKSTREAM answers nil for a missing one.
local function add(stream, ...)
  local id = redis.call('XADD', stream, 'NOMKSTREAM', ...)
  if id then return id end
  id = redis.call('XADD', stream, ...)
  relay({'i', stream, tostring(now_ms / 1000)})
  return id
end

local function emit(event_type, tst, lat, lon, acc, detail)
  local fields = {'type', event_type, 'elder_id', elder, 'device_id', device,
    'tst', tst, 'lat', lat, 'lon', lon, 'acc', acc, 'received_ms', received_ms,
    'detail', detail}
  local id = add(KEYS[6], 'MAXLEN', '~', '500', '*', unpack(fields))
  -- The shard stream has no MAXLEN: the ticker trims it behind the alerts group. Its
  -- source names her entry, so a relay applied twice is handled once.
  relay({'x', 'device-events', 'e:' .. elder .. ':events@' .. id, unpack(fields)})
end

-- Her last position, every field: one pass over the small hash costs less than looking up
-- the dozen and a half it needs one by one (each lookup scans it from the start).
local pos = {}
do
  local raw = redis.call('HGETALL', KEYS[2])
  for i = 1, #raw, 2 do pos[raw[i]] = raw[i + 1] end
end
local dev = redis.call('HMGET', KEYS[4], 'online', 'low_battery', 'offline_due_ms', 'battery')
local state = {}

-- Any live message proves the device alive (even a fix rejected below): its offline check
-- moves to OFFLINE_AFTER_S from now, and a return from offline is announced once. A message
-- the broker replays from its retained store is old news and proves nothing.
if not retained then
  state = {'last_seen_ms', received_ms}
  if dev[1] ~= '1' then state[3] = 'online'; state[4] = '1' end
  -- The offline job re-checks last_seen_ms when it comes due and moves itself on, so it is
  -- re-armed only when it would come due in less than half a period (or later than a whole
  -- one: a shorter OFFLINE_AFTER_S), not on every message: a global write per fix saved.
  local after = tonumber(ARGV[21])
  local due = tonumber(dev[3])
  if not due or due - now_ms < after / 2 or due - now_ms > after then
    due = now_ms + after
    state[#state + 1] = 'offline_due_ms'; state[#state + 1] = string.format('%.0f', due)
    relay({'t', 'offline|' .. elder .. '|' .. device, tostring(due / 1000)})
  end
  if dev[1] == '0' then
    emit('device_online', '', pos.lat or '', pos.lon or '', pos.acc or '', '')
  end
end

local function save_state()
  if #state > 0 then redis.call('HSET', KEYS[4], unpack(state)) end
end

-- Battery: the low-battery notice once per state change, 5 points of hysteresis so a level
-- wobbling around the threshold is not a notice per fix.
local function battery(tst, lat, lon, acc)
  local reported_low = alarm == 'low_battery'
  if batt ~= '' and batt ~= dev[4] then
    state[#state + 1] = 'battery'; state[#state + 1] = batt
  elseif batt == dev[4] and not reported_low and dev[2] ~= '1' then
    -- The stored level was judged not low when it was stored, and nothing has changed
    -- since: two number parses a fix saved. A '1' is judged again (the alarm alone may
    -- have set it); a new LOW_BATTERY_PCT applies from the next change of level.
    return
  end
  local level, threshold = tonumber(batt), tonumber(ARGV[18])
  if (reported_low or (level and level <= threshold)) and dev[2] ~= '1' then
    state[#state + 1] = 'low_battery'; state[#state + 1] = '1'
    emit('low_battery', tst, lat, lon, acc, batt)
  elseif not reported_low and level and level > threshold + 5 and dev[2] == '1' then
    state[#state + 1] = 'low_battery'; state[#state + 1] = '0'
  end
end

if kind == 'lastwill' then
  -- The phone's connection died. Whether it is *offline* is the timer's call, so a phone
  -- that reconnects at once is not reported; the last will is kept as an event.
  if not retained then
    state[#state + 1] = 'lastwill_ms'; state[#state + 1] = received_ms
    emit('device_lastwill', ARGV[8], pos.lat or '', pos.lon or '', pos.acc or '', '')
  end
  save_state()
  return done('seen', 'lastwill')
end

if kind == 'heartbeat' then
  battery(ARGV[8], pos.lat or '', pos.lon or '', pos.acc or '')
  save_state()
  if device_alarm then
    emit(alarm, ARGV[8], pos.lat or '', pos.lon or '', pos.acc or '', ARGV[17] == '1' and 'fix unusable' or 'status')
  end
  return done('seen', '')
end

-- kind == 'location'
local tst = tonumber(ARGV[8])
local low_quality = ARGV[17] == '1'
-- Order by the fix time, but never past the receive time: a clock running ahead must not
-- make every later real fix look late.
local order_t = math.min(tst, now_ms / 1000)
-- Formatting a number costs more than the rest of a command: the fix time's own text when
-- it is the order time.
local order_text = order_t == tst and ARGV[8] or tostring(order_t)
local late = order_t < (tonumber(pos.order_t) or -1)

-- Times here are order times (fix time capped at receive time), like the lateness rule.
local lat, lon, acc
local function kmh_between(lat0, lon0, acc0, t0)
  local dt = order_t - t0
  if dt < 1 then dt = 1 end
  -- Both fixes may be off by their accuracy: only distance beyond that is travel.
  local rad = math.pi / 180
  local h = math.sin((lat - lat0) * rad / 2) ^ 2
    + math.cos(lat0 * rad) * math.cos(lat * rad) * math.sin((lon - lon0) * rad / 2) ^ 2
  local travel = 2 * 6371008.8 * math.asin(math.sqrt(h)) - (acc or 0) - (acc0 or 0)
  if travel < 0 then travel = 0 end
  return travel / dt * 3.6, travel, dt
end

local reanchored = false
-- The same coordinates as the last good fix are no travel at all (nothing to compute).
if not late and pos.good_tst and (ARGV[9] ~= pos.good_lat or ARGV[10] ~= pos.good_lon) then
  lat, lon, acc = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
  local max_kmh = tonumber(ARGV[6])
  local kmh, travel, dt = kmh_between(
    tonumber(pos.good_lat), tonumber(pos.good_lon), tonumber(pos.good_acc), tonumber(pos.good_tst))
  if kmh > max_kmh then
    -- Impossible from the last good fix. Either this is a one-fix jump, or the last good
    -- fix was itself the outlier: two consecutive fixes that agree with each other but not
    -- with it re-anchor the elder instead of freezing them on a wrong place.
    local agrees = pos.jump_tst and kmh_between(tonumber(pos.jump_lat), tonumber(pos.jump_lon),
      tonumber(pos.jump_acc), tonumber(pos.jump_tst)) <= max_kmh
    if not agrees then
      redis.call('HSET', KEYS[2], 'jump_tst', order_text, 'jump_lat', ARGV[9], 'jump_lon', ARGV[10], 'jump_acc', ARGV[11])
      save_state()
      if device_alarm then
        emit(alarm, ARGV[8], pos.good_lat or '', pos.good_lon or '', pos.good_acc or '',
          'fix rejected: too_fast')
      end
      local detail = string.format('%.0f km/h from the last good fix (%.0f m in %.0f s)', kmh, travel, dt)
      dead_letter('too_fast', detail)
      return done('too_fast', detail)
    end
    reanchored = true
  end
end

local flag_text = ''
if late and low_quality then flag_text = 'late,low_quality'
elseif late then flag_text = 'late'
elseif low_quality then flag_text = 'low_quality' end
if reanchored then flag_text = flag_text == '' and 'reanchored' or flag_text .. ',reanchored' end

add(KEYS[3], 'MINID', '~', ARGV[5], '*',
  'tst', ARGV[8], 'lat', ARGV[9], 'lon', ARGV[10], 'acc', ARGV[11], 'src', ARGV[12],
  'vel', ARGV[13], 'cog', ARGV[14], 'batt', batt, 'alarm', alarm, 'flags', flag_text,
  'received_ms', received_ms)

if not late then
  local p = {'order_t', order_text, 'tst', ARGV[8], 'received_ms', received_ms}
  -- A field that already holds its value is not written again (nor logged in the AOF).
  local function put(have, field, value)
    if have ~= value then p[#p + 1] = field; p[#p + 1] = value end
  end
  put(pos.lat, 'lat', ARGV[9]); put(pos.lon, 'lon', ARGV[10]); put(pos.acc, 'acc', ARGV[11])
  put(pos.src, 'src', ARGV[12]); put(pos.vel, 'vel', ARGV[13]); put(pos.cog, 'cog', ARGV[14])
  put(pos.device_id, 'device_id', device); put(pos.flags, 'flags', flag_text)
  if batt ~= '' then put(pos.battery, 'battery', batt) end
  if not low_quality then
    p[#p + 1] = 'good_tst'; p[#p + 1] = order_text
    put(pos.good_lat, 'good_lat', ARGV[9]); put(pos.good_lon, 'good_lon', ARGV[10])
    put(pos.good_acc, 'good_acc', ARGV[11])
  end
  redis.call('HSET', KEYS[2], unpack(p))
  if pos.jump_tst then
    redis.call('HDEL', KEYS[2], 'jump_tst', 'jump_lat', 'jump_lon', 'jump_acc')
  end
end
local zones_applied = ''
-- @zones apply (geofences' piece: the zone state and transitions this fix moves)
battery(ARGV[8], ARGV[9], ARGV[10], ARGV[11])
if not retained then
  state[#state + 1] = 'last_fix_ms'; state[#state + 1] = received_ms
end
save_state()
if device_alarm then emit(alarm, ARGV[8], ARGV[9], ARGV[10], ARGV[11], '') end

if late then return done('stored_late', zones_applied) end
if low_quality then return done('stored_flagged', zones_applied) end
return done('stored', zones_applied)
