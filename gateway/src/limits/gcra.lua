-- One GCRA check, atomically. KEYS[1] holds the key's theoretical arrival time
-- (TAT) in microseconds of Redis's own clock, so every gateway shares one clock.
-- ARGV[1]: the emission interval in microseconds (one request's share of the
-- period); ARGV[2]: the burst, in requests.
-- Returns 0 when the request is allowed (and counted), else the microseconds to
-- wait before one would be.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
local next_tat = tat + interval
local wait = next_tat - burst * interval - now
if wait > 0 then
  return math.ceil(wait)
end
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX',
  math.max(1, math.ceil((next_tat - now) / 1000)))
return 0
