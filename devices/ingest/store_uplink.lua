-- Store one decoded uplink for one elder, atomically (Redis 6.2, Lua 5.1).
--
-- KEYS  1 elder's device binding   2 last position (hash)   3 track (stream)
--       4 device state (hash)      5 recent fix ids (zset)  6 elder's events (stream)
--       7 device events (stream)   8 rejected (stream)      9 rejected counts (hash)
--       10 timers (zset)
-- ARGV  1 kind (location|heartbeat|lastwill)  2 device_id  3 elder_id  4 received_ms
--       5 retention_ms  6 max_speed_kmh  7 fix_id  8 tst  9 lat  10 lon  11 acc  12 src
--       13 vel  14 cog  15 batt  16 alarm  17 low_quality (1|0)  18 low_battery_pct
--       19 topic  20 payload (truncated, for the dead letter)  21 offline_after_ms
-- Returns {verdict, detail}; verdict is stored | stored_late | stored_flagged | seen |
-- duplicate | too_fast | stale_route.
--
-- It runs once per fix at province scale, so every hash is read once and written once.

local kind, device, elder = ARGV[1], ARGV[2], ARGV[3]
local received_ms = ARGV[4]
local alarm, batt = ARGV[16], ARGV[15]

-- The binding is checked here so a deleted or re-bound device never writes into an elder
-- it no longer belongs to, whatever the caller's registry cache believes.
if redis.call('GET', KEYS[1]) ~= device then
  return {'stale_route', ''}
end

local function emit(event_type, tst, lat, lon, acc, detail)
  local fields = {'type', event_type, 'elder_id', elder, 'device_id', device,
    'tst', tst, 'lat', lat, 'lon', lon, 'acc', acc, 'received_ms', received_ms,
    'detail', detail}
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', 500, '*', unpack(fields))
  redis.call('XADD', KEYS[7], 'MAXLEN', '~', 100000, '*', unpack(fields))
end

local pos = redis.call('HMGET', KEYS[2], 'tst', 'lat', 'lon', 'acc',
  'good_tst', 'good_lat', 'good_lon', 'good_acc')
local dev = redis.call('HMGET', KEYS[4], 'online', 'low_battery')

if kind == 'lastwill' then
  redis.call('HSET', KEYS[4], 'online', '0', 'lastwill_ms', received_ms)
  emit('device_lastwill', ARGV[8], pos[2] or '', pos[3] or '', pos[4] or '', '')
  return {'seen', 'lastwill'}
end

-- Any message proves the device alive (even a fix rejected below): its offline check moves
-- to OFFLINE_AFTER_S from now, and a return from offline is announced (state changes only).
local state = {'last_seen_ms', received_ms, 'online', '1'}
redis.call('ZADD', KEYS[10], (tonumber(received_ms) + tonumber(ARGV[21])) / 1000,
  'offline|' .. elder .. '|' .. device)
if dev[1] == '0' then
  emit('device_online', pos[1] or '', pos[2] or '', pos[3] or '', pos[4] or '', '')
end

-- Battery: the low-battery notice once per state change, 5 points of hysteresis so a level
-- wobbling around the threshold is not a notice per fix.
local function battery(tst, lat, lon, acc)
  if batt ~= '' then
    table.insert(state, 'battery'); table.insert(state, batt)
  end
  local level, threshold = tonumber(batt), tonumber(ARGV[18])
  local reported_low = alarm == 'low_battery'
  if (reported_low or (level and level <= threshold)) and dev[2] ~= '1' then
    table.insert(state, 'low_battery'); table.insert(state, '1')
    emit('low_battery', tst, lat, lon, acc, batt)
  elseif not reported_low and level and level > threshold + 5 and dev[2] == '1' then
    table.insert(state, 'low_battery'); table.insert(state, '0')
  end
end

local device_alarms = {sos = true, fall = true, removed = true}

if kind == 'heartbeat' then
  battery(ARGV[8], pos[2] or '', pos[3] or '', pos[4] or '')
  redis.call('HSET', KEYS[4], unpack(state))
  if device_alarms[alarm] then emit(alarm, ARGV[8], pos[2] or '', pos[3] or '', pos[4] or '', 'status') end
  return {'seen', ''}
end

-- kind == 'location'
local function reject(reason, detail)
  redis.call('HSET', KEYS[4], unpack(state))
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', 10000, '*',
    'reason', reason, 'detail', detail, 'topic', ARGV[19], 'payload', ARGV[20],
    'device_id', device, 'elder_id', elder, 'received_ms', received_ms)
  redis.call('HINCRBY', KEYS[9], reason, 1)
  return {reason, detail}
end

local fix_id = ARGV[7]
if redis.call('ZSCORE', KEYS[5], fix_id) then
  return reject('duplicate', 'this fix is already stored')
end
local tst, lat, lon = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local acc = tonumber(ARGV[11])
local low_quality = ARGV[17] == '1'
local late = tst < (tonumber(pos[1]) or -1)

if not late and pos[5] then
  local dt = tst - tonumber(pos[5])
  if dt < 1 then dt = 1 end
  -- Both fixes may be off by their accuracy: only distance beyond that is travel.
  local rad = math.pi / 180
  local lat0, lon0 = tonumber(pos[6]), tonumber(pos[7])
  local h = math.sin((lat - lat0) * rad / 2) ^ 2
    + math.cos(lat0 * rad) * math.cos(lat * rad) * math.sin((lon - lon0) * rad / 2) ^ 2
  local travel = 2 * 6371008.8 * math.asin(math.sqrt(h)) - (acc or 0) - (tonumber(pos[8]) or 0)
  if travel < 0 then travel = 0 end
  local kmh = travel / dt * 3.6
  if kmh > tonumber(ARGV[6]) then
    return reject('too_fast', string.format('%.0f km/h from the last good fix (%.0f m in %.0f s)',
      kmh, travel, dt))
  end
end

local flag_text = ''
if late and low_quality then flag_text = 'late,low_quality'
elseif late then flag_text = 'late'
elseif low_quality then flag_text = 'low_quality' end

redis.call('XADD', KEYS[3], 'MINID', '~', tostring(tonumber(received_ms) - tonumber(ARGV[5])), '*',
  'tst', ARGV[8], 'lat', ARGV[9], 'lon', ARGV[10], 'acc', ARGV[11], 'src', ARGV[12],
  'vel', ARGV[13], 'cog', ARGV[14], 'batt', batt, 'alarm', alarm, 'flags', flag_text,
  'received_ms', received_ms)
redis.call('ZADD', KEYS[5], tst, fix_id)
if redis.call('ZCARD', KEYS[5]) > 96 then
  redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -65)  -- keep the 64 newest fix ids
end

if not late then
  local p = {'tst', ARGV[8], 'lat', ARGV[9], 'lon', ARGV[10], 'acc', ARGV[11], 'src', ARGV[12],
    'vel', ARGV[13], 'cog', ARGV[14], 'received_ms', received_ms, 'device_id', device,
    'flags', flag_text}
  if batt ~= '' then table.insert(p, 'battery'); table.insert(p, batt) end
  if not low_quality then
    table.insert(p, 'good_tst'); table.insert(p, ARGV[8])
    table.insert(p, 'good_lat'); table.insert(p, ARGV[9])
    table.insert(p, 'good_lon'); table.insert(p, ARGV[10])
    table.insert(p, 'good_acc'); table.insert(p, ARGV[11])
  end
  redis.call('HSET', KEYS[2], unpack(p))
end
battery(ARGV[8], ARGV[9], ARGV[10], ARGV[11])
table.insert(state, 'last_fix_ms'); table.insert(state, received_ms)
redis.call('HSET', KEYS[4], unpack(state))
if device_alarms[alarm] then emit(alarm, ARGV[8], ARGV[9], ARGV[10], ARGV[11], '') end

if late then return {'stored_late', ''} end
if low_quality then return {'stored_flagged', ''} end
return {'stored', ''}
