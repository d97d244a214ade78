-- Geofences' pieces of the ingest's store script (devices/ingest/store_uplink.lua), Redis
-- 6.2, Lua 5.1: the zone state moves in the same commit as the fix it was computed from.
-- Assembled in one place (devices/ingest/pipeline.py's ``assemble``): each "-- @piece NAME"
-- section replaces the store script's "-- @zones NAME" line.
--
-- What a piece may use of the store script: KEYS 8 zone state (hash, with v), 9 her
-- transitions (stream), both geofences' names (the evaluator's script_keys); ARGV 8-11 the
-- fix (tst, lat, lon, acc), 23 expected zone-state version ('' = no zone update), 24 the
-- update (JSON; '' = checked only; 'break' with no version: every streak broken); the
-- locals elder, device, received_ms, late, add (a stream XADD that indexes retention),
-- relay (an effect on her relay list), refuse (in the check: nothing of the fix is kept,
-- its message id neither, and the verdict is answered) and zones_applied (set to 'zones'
-- when applied).

-- @piece check
-- The zone engine evaluated this fix against a version of the zone state; if that is not
-- the stored version any more, nothing is written and the caller evaluates again.
if ARGV[23] ~= '' and (redis.call('HGET', KEYS[8], 'v') or '0') ~= ARGV[23] then
  return refuse('zone_conflict')
end

-- @piece apply
if ARGV[23] ~= '' and ARGV[24] == '' and not late then
  zones_applied = 'zones'  -- evaluated against the current state, and nothing changes
elseif ARGV[23] ~= '' and not late then
  -- Zone state moves in the same commit as the fix it was computed from.
  local update = cjson.decode(ARGV[24])
  local fields = {'v', tostring(tonumber(ARGV[23]) + 1)}
  for zone_id, zone_state in pairs(update.states) do
    table.insert(fields, zone_id); table.insert(fields, cjson.encode(zone_state))
  end
  redis.call('HSET', KEYS[8], unpack(fields))
  for _, t in ipairs(update.transitions) do
    local tf = {'zone_id', t.zone_id, 'kind', t.kind, 'outside_all_safe', t.outside_all_safe and '1' or '0',
      'tst', ARGV[8], 'lat', ARGV[9], 'lon', ARGV[10], 'acc', ARGV[11], 'elder_id', elder,
      'device_id', device, 'received_ms', received_ms}
    local id = add(KEYS[9], 'MAXLEN', '~', '1000', '*', unpack(tf))
    relay({'x', 'transitions', 'e:' .. elder .. ':transitions@' .. id, unpack(tf)})
  end
  zones_applied = 'zones'
elseif ARGV[24] == 'break' and not late then
  -- A current fix the zone stage could not evaluate (its state kept moving under it): it
  -- breaks every streak, so an exit may come one fix later but is never made of two fixes
  -- that were not consecutive.
  local raw = redis.call('HGETALL', KEYS[8])
  local fields = {}
  for i = 1, #raw, 2 do
    if raw[i] == 'v' then
      table.insert(fields, 'v'); table.insert(fields, tostring(tonumber(raw[i + 1]) + 1))
    else
      local zone_state = cjson.decode(raw[i + 1])
      zone_state.s = 0
      zone_state.to = cjson.null
      table.insert(fields, raw[i]); table.insert(fields, cjson.encode(zone_state))
    end
  end
  if #fields > 0 then redis.call('HSET', KEYS[8], unpack(fields)) end
end
