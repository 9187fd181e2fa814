-- ARGV: job, user, priority (1-3), delay (ms). Returns {'1'} when added, {'0'} when the
-- job is in the queue already.
local job, user, p, delay = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('HEXISTS', JOBS, job) == 1 then
  return {'0'}
end
local now = now_ms()
local state = {u = user, p = p, a = 1, e = now}
if delay > 0 then
  state.s = 'd'
  save(job, state)
  redis.call('ZADD', DELAYED, now + delay, job)
else
  line_up(job, state)
end
return {'1'}
