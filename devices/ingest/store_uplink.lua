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

local kind, device, elder = ARGV[1], ARGV[2], ARGV[3]
local received_ms = ARGV[4]

-- The binding is checked here so a deleted or re-bound device never writes into an elder
-- it no longer belongs to, whatever the caller's registry cache believes.
if redis.call('GET', KEYS[1]) ~= device then
  return {'stale_route', ''}
end

local function reject(reason, detail)
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', 10000, '*',
    'reason', reason, 'detail', detail, 'topic', ARGV[19], 'payload', ARGV[20],
    'device_id', device, 'elder_id', elder, 'received_ms', received_ms)
  redis.call('HINCRBY', KEYS[9], reason, 1)
  return {reason, detail}
end

local function emit(event_type, tst, lat, lon, acc, detail)
  local fields = {'type', event_type, 'elder_id', elder, 'device_id', device,
    'tst', tst, 'lat', lat, 'lon', lon, 'acc', acc, 'received_ms', received_ms,
    'detail', detail}
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', 500, '*', unpack(fields))
  redis.call('XADD', KEYS[7], 'MAXLEN', '~', 100000, '*', unpack(fields))
end

local function last_known()
  local p = redis.call('HMGET', KEYS[2], 'tst', 'lat', 'lon', 'acc')
  return p[1] or '', p[2] or '', p[3] or '', p[4] or ''
end

-- Any message proves the device alive: note it, announce a return from offline (state
-- changes only), and push its offline check out to OFFLINE_AFTER_S from now.
local function alive()
  local was = redis.call('HGET', KEYS[4], 'online')
  redis.call('HSET', KEYS[4], 'last_seen_ms', received_ms, 'online', '1')
  redis.call('ZADD', KEYS[10], (tonumber(received_ms) + tonumber(ARGV[21])) / 1000,
    'offline|' .. elder .. '|' .. device)
  if was == '0' then
    local p = redis.call('HMGET', KEYS[2], 'tst', 'lat', 'lon', 'acc')
    emit('device_online', p[1] or '', p[2] or '', p[3] or '', p[4] or '', '')
  end
end

-- Battery level, and the low-battery notice once per state change.
local function seen(batt, reported_low, tst, lat, lon, acc)
  if batt ~= '' then redis.call('HSET', KEYS[4], 'battery', batt) end
  local level, threshold = tonumber(batt), tonumber(ARGV[18])
  local low = redis.call('HGET', KEYS[4], 'low_battery')
  if (reported_low or (level and level <= threshold)) and low ~= '1' then
    redis.call('HSET', KEYS[4], 'low_battery', '1')
    emit('low_battery', tst, lat, lon, acc, batt)
  elseif not reported_low and level and level > threshold + 5 and low == '1' then
    -- 5 points of hysteresis: a level wobbling around 20% is not a notice per fix.
    redis.call('HSET', KEYS[4], 'low_battery', '0')
  end
end

local function haversine_m(lat1, lon1, lat2, lon2)
  local r = 6371008.8
  local rad = math.pi / 180
  local dp, dl = (lat2 - lat1) * rad, (lon2 - lon1) * rad
  local h = math.sin(dp / 2) ^ 2 + math.cos(lat1 * rad) * math.cos(lat2 * rad) * math.sin(dl / 2) ^ 2
  return 2 * r * math.asin(math.sqrt(h))
end

local alarm = ARGV[16]
local device_alarms = {sos = true, fall = true, removed = true}

if kind == 'lastwill' then
  redis.call('HSET', KEYS[4], 'online', '0', 'lastwill_ms', received_ms)
  local t, la, lo, ac = last_known()
  emit('device_lastwill', ARGV[8], la, lo, ac, '')
  return {'seen', 'lastwill'}
end

if kind == 'heartbeat' then
  alive()
  local t, la, lo, ac = last_known()
  seen(ARGV[15], alarm == 'low_battery', ARGV[8], la, lo, ac)
  if device_alarms[alarm] then emit(alarm, ARGV[8], la, lo, ac, 'status') end
  return {'seen', ''}
end

-- kind == 'location'
-- Even a fix we reject below proves the device is alive.
alive()
local fix_id = ARGV[7]
if redis.call('ZSCORE', KEYS[5], fix_id) then
  return reject('duplicate', 'this fix is already stored')
end
local tst, lat, lon = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local acc = tonumber(ARGV[11])
local low_quality = ARGV[17] == '1'
local last_tst = tonumber(redis.call('HGET', KEYS[2], 'tst') or '-1')
local late = tst < last_tst

if not late then
  local g = redis.call('HMGET', KEYS[2], 'good_tst', 'good_lat', 'good_lon', 'good_acc')
  if g[1] then
    local dt = tst - tonumber(g[1])
    if dt < 1 then dt = 1 end
    -- Both fixes may be off by their accuracy: only distance beyond that is travel.
    local travel = haversine_m(tonumber(g[2]), tonumber(g[3]), lat, lon)
      - (acc or 0) - (tonumber(g[4]) or 0)
    if travel < 0 then travel = 0 end
    local kmh = travel / dt * 3.6
    if kmh > tonumber(ARGV[6]) then
      return reject('too_fast', string.format('%.0f km/h from the last good fix (%.0f m in %.0f s)',
        kmh, travel, dt))
    end
  end
end

local flags = {}
if late then table.insert(flags, 'late') end
if low_quality then table.insert(flags, 'low_quality') end
local flag_text = table.concat(flags, ',')

local minid = tostring(tonumber(received_ms) - tonumber(ARGV[5]))
redis.call('XADD', KEYS[3], 'MINID', '~', minid, '*',
  'tst', ARGV[8], 'lat', ARGV[9], 'lon', ARGV[10], 'acc', ARGV[11], 'src', ARGV[12],
  'vel', ARGV[13], 'cog', ARGV[14], 'batt', ARGV[15], 'alarm', alarm, 'flags', flag_text,
  'received_ms', received_ms)
redis.call('ZADD', KEYS[5], tst, fix_id)
redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -65)

if not late then
  redis.call('HSET', KEYS[2], 'tst', ARGV[8], 'lat', ARGV[9], 'lon', ARGV[10], 'acc', ARGV[11],
    'src', ARGV[12], 'vel', ARGV[13], 'cog', ARGV[14], 'received_ms', received_ms,
    'device_id', device, 'flags', flag_text)
  if ARGV[15] ~= '' then redis.call('HSET', KEYS[2], 'battery', ARGV[15]) end
  if not low_quality then
    redis.call('HSET', KEYS[2], 'good_tst', ARGV[8], 'good_lat', ARGV[9], 'good_lon', ARGV[10],
      'good_acc', ARGV[11])
  end
end
seen(ARGV[15], alarm == 'low_battery', ARGV[8], ARGV[9], ARGV[10], ARGV[11])
redis.call('HSET', KEYS[4], 'last_fix_ms', received_ms)
if device_alarms[alarm] then emit(alarm, ARGV[8], ARGV[9], ARGV[10], ARGV[11], '') end

if late then return {'stored_late', ''} end
if low_quality then return {'stored_flagged', ''} end
return {'stored', ''}
