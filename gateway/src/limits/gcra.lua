-- GCRA, atomically: takes up to ARGV[3] requests' worth of KEYS[1]'s budget at
-- once. KEYS[1] holds the key's theoretical arrival time (TAT) in microseconds of
-- Redis's own clock, so every gateway shares one clock.
-- ARGV[1]: the emission interval in microseconds (one request's share of the
-- period); ARGV[2]: the burst, in requests; ARGV[3]: how many requests to take.
-- Returns {granted, wait}: how many were granted (and counted), between 1 and
-- ARGV[3]; or {0, microseconds to wait before one would be}.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
local available = math.floor((now - tat) / interval + burst)
if available < 1 then
  return {0, math.ceil(tat + interval - burst * interval - now)}
end
local granted = math.min(want, available)
local next_tat = tat + granted * interval
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX',
  math.max(1, math.ceil((next_tat - now) / 1000)))
return {granted, 0}
