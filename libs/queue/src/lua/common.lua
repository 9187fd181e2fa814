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
--   12   cursors: hash, priority -> the XAUTOCLAIM cursor; `rescan` set when a look handed
--        entries back for the next look's scan to take up
--   13   seq: counter ordering parked jobs
--   14   inflight: counter, deliveries in flight over every user (the bound's count)
--   15   users: hash, user id -> jobs in the queue (anywhere): who shares the bound
--   16   caps: hash, user id -> `cap:until ms`, the user's cap as a worker last said it
--   17   limit: hash, the effective bound after a 429 (`value`, float) and when it was
--        last lowered (`at` ms); missing: the configured max
--   18   parkedn: hash, user id -> parked jobs (so a release looks for none when none)
--   19   wake: the pub/sub channel idle workers listen on
-- ARGV[1] of every script is the configured bound on deliveries in flight (0: none); the
-- scripts' own arguments follow.
-- A job's state: u user, p priority (1-3), a attempt of its next or current delivery,
-- e enqueued at (ms), dv delivered before, s where it is (w waiting in its line, p parked,
-- d delayed, f in flight), id its stream entry (w, f), k its parked member (p), c the
-- consumer holding it (f).
local STREAMS = {KEYS[1], KEYS[2], KEYS[3]}
local DELAYED, JOBS, RUNNING = KEYS[4], KEYS[5], KEYS[6]
local PARKED = {KEYS[7], KEYS[8], KEYS[9]}
local DEAD, BUCKET, CURSORS, SEQ = KEYS[10], KEYS[11], KEYS[12], KEYS[13]
local INFLIGHT, USERS, CAPS, LIMIT, PARKEDN, WAKE = KEYS[14], KEYS[15], KEYS[16], KEYS[17], KEYS[18], KEYS[19]
local GROUP = 'workers'
local MAX_IN_FLIGHT = tonumber(ARGV[1])

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

local function count_parked(user, by)
  if redis.call('HINCRBY', PARKEDN, user, by) <= 0 then
    redis.call('HDEL', PARKEDN, user)
  end
end

-- Parks a job whose user is at their cap, out of the line.
local function park(job, state)
  local seq = redis.call('INCR', SEQ)
  local member = state.u .. ':' .. string.format('%020d', seq) .. ':' .. job
  redis.call('ZADD', PARKED[state.p], 0, member)
  count_parked(state.u, 1)
  state.s = 'p'
  state.k = member
  state.id = nil
  state.c = nil
  save(job, state)
end

-- The effective bound on deliveries in flight: the configured one, or less after a 429;
-- 0 for none.
local function bound()
  if MAX_IN_FLIGHT <= 0 then
    return 0
  end
  local value = tonumber(redis.call('HGET', LIMIT, 'value') or '')
  if not value then
    return MAX_IN_FLIGHT
  end
  return math.max(1, math.min(MAX_IN_FLIGHT, math.floor(value)))
end

local function in_flight()
  return tonumber(redis.call('GET', INFLIGHT) or '0')
end

-- A user's cap under the bound `limit` (0: none): their own, at most an even share of
-- the bound among the users with jobs in the queue (rounded up).
local function share(cap, limit)
  if limit <= 0 then
    return math.max(1, cap)
  end
  local users = math.max(1, redis.call('HLEN', USERS))
  return math.max(1, math.min(cap, math.ceil(limit / users)))
end

-- A job leaves the queue for good (completed, dead-lettered, removed).
local function leave(user)
  if redis.call('HINCRBY', USERS, user, -1) <= 0 then
    redis.call('HDEL', USERS, user)
    redis.call('HDEL', CAPS, user)
  end
end

-- Frees `n` of the user's slots (never below zero) and puts back in line as many of their
-- parked jobs as `cap` (their cap, fair share applied by this function) now leaves room
-- for, at least one, most urgent first. Returns whether a job may now be deliverable that
-- was not: the bound was reached, or parked jobs went back in line.
local function release(user, cap, n, limit)
  local before = in_flight()
  if before <= n then
    redis.call('DEL', INFLIGHT)
  else
    redis.call('DECRBY', INFLIGHT, n)
  end
  local running = tonumber(redis.call('HGET', RUNNING, user) or '0')
  if running <= n then
    redis.call('HDEL', RUNNING, user)
    running = 0
  else
    running = redis.call('HINCRBY', RUNNING, user, -n)
  end
  local freed = limit > 0 and before >= limit
  if not redis.call('HGET', PARKEDN, user) then
    return freed
  end
  local room = math.max(1, share(cap, limit) - running)
  for p = 1, 3 do
    while room > 0 do
      local member = redis.call('ZRANGEBYLEX', PARKED[p], '[' .. user .. ':', '(' .. user .. ';', 'LIMIT', 0, 1)[1]
      if not member then
        break
      end
      redis.call('ZREM', PARKED[p], member)
      count_parked(user, -1)
      local job = string.match(member, ':([^:]+)$')
      local state = load(job)
      if state and state.s == 'p' and state.k == member then
        line_up(job, state)
        room = room - 1
        freed = true
      end
    end
  end
  return freed
end

-- Tells idle workers (every replica's) to look again.
local function wake()
  redis.call('PUBLISH', WAKE, '')
end

-- Moves a job (out of its line already) to the dead letters, trimmed to about `retention`.
local function bury(job, state, reason, retention, now)
  redis.call('XADD', DEAD, 'MAXLEN', '~', retention, '*', 'job', job, 'user', state.u,
    'attempts', state.a, 'reason', reason, 'priority', state.p, 'at', now)
  redis.call('HDEL', JOBS, job)
  leave(state.u)
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
