-- The effective bound. ARGV (after the bound): mode ('throttle', 'relieve' or 'read'),
-- throttle factor, throttle cooldown (ms). Returns {effective bound or 0, in flight}.
local mode, factor, cooldown = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if MAX_IN_FLIGHT > 0 and mode ~= 'read' then
  local stored = redis.call('HMGET', LIMIT, 'value', 'at')
  local value = math.min(MAX_IN_FLIGHT, tonumber(stored[1] or '') or MAX_IN_FLIGHT)
  if mode == 'throttle' then
    local now = now_ms()
    local at = tonumber(stored[2] or '') or 0
    if now - at >= cooldown then
      value = math.max(1, math.floor(value * factor))
      redis.call('HSET', LIMIT, 'value', tostring(value), 'at', now)
    end
  elseif stored[1] then
    local raised = math.min(MAX_IN_FLIGHT, value + 1 / math.max(1, value))
    if raised >= MAX_IN_FLIGHT then
      redis.call('DEL', LIMIT)
    else
      redis.call('HSET', LIMIT, 'value', tostring(raised))
    end
    if math.floor(raised) > math.floor(value) then
      wake()
    end
  end
end
return {tostring(bound()), tostring(in_flight())}
