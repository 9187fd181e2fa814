-- ARGV (after the bound): n, then n triples of priority, entry, job, then pairs of user
-- id and cap for their users. Returns {completed}: how many were held (the others were
-- settled already: no-ops).
local n = tonumber(ARGV[2])
local caps = {}
for i = 3 + 3 * n, #ARGV, 2 do
  caps[ARGV[i]] = tonumber(ARGV[i + 1])
end
local freed_by = {}
local done = 0
for i = 3, 2 + 3 * n, 3 do
  local p, id, job = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2]
  drop_entry(p, id)
  local state = load(job)
  if state and state.s == 'f' and state.id == id then
    redis.call('HDEL', JOBS, job)
    freed_by[state.u] = (freed_by[state.u] or 0) + 1
    done = done + 1
  end
end
local limit = bound()
local signal = false
for user, count in pairs(freed_by) do
  if release(user, caps[user] or 1, count, limit) then
    signal = true
  end
  for _ = 1, count do
    leave(user)
  end
end
if signal then
  wake()
end
return {tostring(done)}
