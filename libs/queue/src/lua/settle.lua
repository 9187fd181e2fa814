-- Retry or defer a delivery. ARGV (after the bound): priority, entry, job, attempt, the
-- user's cap, mode ('retry' counts an attempt, 'defer' does not), delay (ms), max
-- attempts, reason, dead-letter retention. Returns {'delayed'}, {'dead'} (a retry of
-- the last attempt), or {'lost'} when the delivery is no longer held.
local p, id, job, attempt = tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5])
local cap, mode, delay = tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8])
local max_attempts, reason, retention = tonumber(ARGV[9]), ARGV[10], tonumber(ARGV[11])
local state = load(job)
if not state or state.s ~= 'f' or state.id ~= id or state.a ~= attempt then
  return {'lost'}
end
drop_entry(p, id)
local now = now_ms()
local user = state.u
local result
if mode == 'retry' and state.a >= max_attempts then
  bury(job, state, reason, retention, now)
  result = {'dead'}
else
  if mode == 'retry' then
    state.a = state.a + 1
  end
  state.s = 'd'
  state.id = nil
  state.c = nil
  save(job, state)
  redis.call('ZADD', DELAYED, now + delay, job)
  result = {'delayed'}
end
release(user, cap, 1, bound())
-- Idle workers learn when the delayed job is due (and take what the release freed).
wake()
return result
