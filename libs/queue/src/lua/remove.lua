-- ARGV (after the bound): job. Removes it wherever it waits; {'1'} when removed, {'0'}
-- when not in the queue or in flight.
local job = ARGV[2]
local state = load(job)
if not state or state.s == 'f' then
  return {'0'}
end
if state.s == 'w' then
  drop_entry(state.p, state.id)
elseif state.s == 'd' then
  redis.call('ZREM', DELAYED, job)
elseif state.s == 'p' then
  redis.call('ZREM', PARKED[state.p], state.k)
  count_parked(state.u, -1)
end
redis.call('HDEL', JOBS, job)
leave(state.u)
return {'1'}
