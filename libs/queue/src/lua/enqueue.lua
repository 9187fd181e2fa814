-- ARGV (after the bound): quadruples of job, user, priority (1-3), delay (ms). Returns,
-- for each, '1' when added and '0' when the job is in the queue already.
local now = now_ms()
local added = {}
local any = false
for i = 2, #ARGV, 4 do
  local job, user, p, delay = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  if redis.call('HEXISTS', JOBS, job) == 1 then
    added[#added + 1] = '0'
  else
    local state = {u = user, p = p, a = 1, e = now}
    redis.call('HINCRBY', USERS, user, 1)
    if delay > 0 then
      state.s = 'd'
      save(job, state)
      redis.call('ZADD', DELAYED, now + delay, job)
    else
      line_up(job, state)
    end
    added[#added + 1] = '1'
    any = true
  end
end
if any then
  wake()
end
return added
