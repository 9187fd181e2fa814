-- ARGV (after the bound): job. Returns {position}, or {'-1'} when the job is not waiting.
local state = load(ARGV[2])
if not state then
  return {'-1'}
end
local ahead = 0
if state.s == 'w' then
  for q = 1, state.p - 1 do
    ahead = ahead + waiting(q)
  end
  -- Entries after the group's last delivered one and before this one (none when this
  -- one was just read and is being admitted).
  local last = last_delivered(state.p)
  ahead = ahead + #redis.call('XRANGE', STREAMS[state.p], '(' .. last, '(' .. state.id)
elseif state.s == 'p' then
  for q = 1, state.p do
    ahead = ahead + waiting(q)
  end
  local first, after = '[' .. state.u .. ':', '(' .. state.u .. ';'
  for q = 1, state.p - 1 do
    ahead = ahead + redis.call('ZLEXCOUNT', PARKED[q], first, after)
  end
  ahead = ahead + redis.call('ZLEXCOUNT', PARKED[state.p], first, '(' .. state.k)
else
  return {'-1'}
end
return {tostring(ahead)}
