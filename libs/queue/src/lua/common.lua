-- Shared by every queue script (prepended to each). Every script gets the same KEYS, in
-- this order, all under one Redis Cluster hash tag:
--   1-3  the lines: one stream per priority (high, normal, low), consumer group `workers`
--   4    delayed: sorted set, job id scored by when it is due (ms)
--   5    jobs: hash, job id -> JSON state (see below): the dedupe marker and its location
--   6    running: hash, user id -> deliveries in flight
--   7-9  parked: sorted sets per priority, all scored 0, members `user:seq:job` (so each
--        user's parked jobs are a lexicographic range, oldest first)
--   10   dead: the dead-letter stream
--   11   bucket: hash, the shared token bucket (`tokens`, `at` ms)
--   12   cursors: hash, priority -> the XAUTOCLAIM cursor
--   13   seq: counter ordering parked jobs
-- A job's state: u user, p priority (1-3), a attempt of its next or current delivery,
-- e enqueued at (ms), dv delivered before, s where it is (w waiting in its line, p parked,
-- d delayed, f in flight), id its stream entry (w, f), k its parked member (p), c the
-- consumer holding it (f).
local STREAMS = {KEYS[1], KEYS[2], KEYS[3]}
local DELAYED, JOBS, RUNNING = KEYS[4], KEYS[5], KEYS[6]
local PARKED = {KEYS[7], KEYS[8], KEYS[9]}
local DEAD, BUCKET, CURSORS, SEQ = KEYS[10], KEYS[11], KEYS[12], KEYS[13]
local GROUP = 'workers'

-- Redis's clock in milliseconds: every process agrees on it.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function load(job)
  local raw = redis.call('HGET', JOBS, job)
  if not raw then
    return nil
  end
  return cjson.decode(raw)
end

local function save(job, state)
  redis.call('HSET', JOBS, job, cjson.encode(state))
end

-- Appends the job to the end of its priority's line.
local function line_up(job, state)
  state.id = redis.call('XADD', STREAMS[state.p], '*', 'job', job)
  state.s = 'w'
  state.k = nil
  state.c = nil
  save(job, state)
end

-- Removes a stream entry for good (Redis 7 has no XACKDEL).
local function drop_entry(p, id)
  redis.call('XACK', STREAMS[p], GROUP, id)
  redis.call('XDEL', STREAMS[p], id)
end

-- Parks a job whose user is at their cap, out of the line.
local function park(job, state)
  local seq = redis.call('INCR', SEQ)
  local member = state.u .. ':' .. string.format('%020d', seq) .. ':' .. job
  redis.call('ZADD', PARKED[state.p], 0, member)
  state.s = 'p'
  state.k = member
  state.id = nil
  state.c = nil
  save(job, state)
end

-- Frees one of the user's slots (never below zero) and puts back in line as many of their
-- parked jobs as `cap` now leaves room for, at least one, most urgent first.
local function release(user, cap)
  local running = tonumber(redis.call('HGET', RUNNING, user) or '0')
  if running <= 1 then
    redis.call('HDEL', RUNNING, user)
    running = 0
  else
    running = redis.call('HINCRBY', RUNNING, user, -1)
  end
  local room = math.max(1, cap - running)
  for p = 1, 3 do
    while room > 0 do
      local member = redis.call('ZRANGEBYLEX', PARKED[p], '[' .. user .. ':', '(' .. user .. ';', 'LIMIT', 0, 1)[1]
      if not member then
        break
      end
      redis.call('ZREM', PARKED[p], member)
      local job = string.match(member, ':([^:]+)$')
      local state = load(job)
      if state and state.s == 'p' and state.k == member then
        line_up(job, state)
        room = room - 1
      end
    end
  end
end

-- Moves a job (out of its line already) to the dead letters, trimmed to about `retention`.
local function bury(job, state, reason, retention, now)
  redis.call('XADD', DEAD, 'MAXLEN', '~', retention, '*', 'job', job, 'user', state.u,
    'attempts', state.a, 'reason', reason, 'priority', state.p, 'at', now)
  redis.call('HDEL', JOBS, job)
end

-- Jobs waiting in line p: every entry not yet delivered (delivered entries are pending,
-- and settled ones are deleted).
local function waiting(p)
  return redis.call('XLEN', STREAMS[p]) - redis.call('XPENDING', STREAMS[p], GROUP)[1]
end

-- The last entry of line p delivered to the group.
local function last_delivered(p)
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', STREAMS[p])) do
    local name, last
    for i = 1, #group, 2 do
      if group[i] == 'name' then
        name = group[i + 1]
      elseif group[i] == 'last-delivered-id' then
        last = group[i + 1]
      end
    end
    if name == GROUP then
      return last
    end
  end
  return '0-0'
end

