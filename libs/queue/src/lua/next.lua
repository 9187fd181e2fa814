-- One look for a delivery for a consumer. ARGV: consumer, visibility timeout (ms), max
-- attempts, rate limit jobs (0: none), rate limit window (ms), dead-letter retention,
-- then the entry held from the last look (priority or 0, entry id, job), then pairs of
-- user id and cap, the caps the caller knows.
-- Returns, after the kind and how many stalled jobs were dead-lettered:
--   {'delivery', buried, priority, entry, job, user, attempt, waited ms or -1, reclaimed 0/1}
--   {'candidate', buried, priority, entry, job, user}: the caller must say the user's cap
--     and look again holding this entry (a rate-limit token is reserved for it)
--   {'limited', buried, ms until a token} / {'idle', buried, ms until a delayed job is due or -1}
--   ({'idle', buried, 0} when this look parked so many entries it stops, to keep scripts short)
local consumer = ARGV[1]
local visibility = tonumber(ARGV[2])
local max_attempts = tonumber(ARGV[3])
local rate_jobs, rate_per = tonumber(ARGV[4]), tonumber(ARGV[5])
local retention = tonumber(ARGV[6])
local held_p, held_id, held_job = tonumber(ARGV[7]), ARGV[8], ARGV[9]
local caps = {}
for i = 10, #ARGV, 2 do
  caps[ARGV[i]] = tonumber(ARGV[i + 1])
end
local now = now_ms()
local buried = 0
-- Entries one look may read before it gives Redis back to other clients.
local budget = 200

-- Delayed jobs that are due go to the end of their lines.
for _, job in ipairs(redis.call('ZRANGEBYSCORE', DELAYED, '-inf', now, 'LIMIT', 0, 100)) do
  redis.call('ZREM', DELAYED, job)
  local state = load(job)
  if state and state.s == 'd' then
    line_up(job, state)
  end
end

-- The shared token bucket, refilled by the time elapsed on Redis's clock.
local available = nil
if rate_jobs > 0 then
  local bucket = redis.call('HMGET', BUCKET, 'tokens', 'at')
  local tokens, at = tonumber(bucket[1]), tonumber(bucket[2])
  if tokens and at then
    available = math.min(rate_jobs, tokens + math.max(0, now - at) * rate_jobs / rate_per)
  else
    available = rate_jobs
  end
end
local function store_tokens()
  redis.call('HSET', BUCKET, 'tokens', available, 'at', now)
  redis.call('PEXPIRE', BUCKET, rate_per * 2)
end
local function spend()
  if available then
    available = available - 1
    store_tokens()
  end
end
local function refund()
  if available then
    available = math.min(rate_jobs, available + 1)
    store_tokens()
  end
end

-- Delivers a waiting job read from line p, or parks it when its user is at `cap`.
local function admit(p, id, job, state, cap, prepaid)
  local running = tonumber(redis.call('HGET', RUNNING, state.u) or '0')
  if running >= cap then
    drop_entry(p, id)
    park(job, state)
    if prepaid then
      refund()
    end
    return nil
  end
  redis.call('HINCRBY', RUNNING, state.u, 1)
  local waited = -1
  if not state.dv then
    waited = math.max(0, now - state.e)
    state.dv = 1
  end
  state.s = 'f'
  state.c = consumer
  save(job, state)
  if not prepaid then
    spend()
  end
  return {'delivery', tostring(buried), tostring(p), id, job, state.u, tostring(state.a), tostring(waited), '0'}
end

-- An entry of line p that was never admitted: deliver it, park it, or ask for the cap.
local function consider(p, id, job, state)
  local cap = caps[state.u]
  if cap then
    return admit(p, id, job, state, cap, false)
  end
  spend()
  return {'candidate', tostring(buried), tostring(p), id, job, state.u}
end

-- The entry held since the last look, its token already spent.
if held_p > 0 then
  local state = load(held_job)
  if state and state.s == 'w' and state.id == held_id then
    local delivery = admit(held_p, held_id, held_job, state, caps[state.u] or 1, true)
    if delivery then
      return delivery
    end
  else
    drop_entry(held_p, held_id)
    refund()
  end
end

if available and available < 1 then
  local wait = math.ceil((1 - available) * rate_per / rate_jobs)
  return {'limited', tostring(buried), tostring(math.max(1, wait))}
end

for p = 1, 3 do
  -- Deliveries unsettled past the visibility timeout, first: the next attempt, or the
  -- dead letters after the last. The cursor is kept so the scan goes round the pending
  -- entries rather than looking at the first few only.
  local cursor = redis.call('HGET', CURSORS, p) or '0-0'
  for _ = 1, 10 do
    local claimed = redis.call('XAUTOCLAIM', STREAMS[p], GROUP, consumer, visibility, cursor, 'COUNT', 1)
    cursor = claimed[1]
    local entry = claimed[2][1]
    if entry then
      local id = entry[1]
      local job = entry[2] and entry[2][2]
      local state = job and load(job)
      if not state or state.id ~= id then
        drop_entry(p, id)
      elseif state.s == 'w' then
        -- Read by a consumer that went away before admitting it.
        redis.call('HSET', CURSORS, p, cursor)
        local found = consider(p, id, job, state)
        if found then
          return found
        end
      elseif state.a >= max_attempts then
        drop_entry(p, id)
        local user = state.u
        bury(job, state, 'not settled within the visibility timeout', retention, now)
        release(user, 1)
        buried = buried + 1
      else
        state.a = state.a + 1
        state.c = consumer
        save(job, state)
        spend()
        redis.call('HSET', CURSORS, p, cursor)
        return {'delivery', tostring(buried), tostring(p), id, job, state.u, tostring(state.a), '-1', '1'}
      end
    end
    if cursor == '0-0' then
      break
    end
  end
  redis.call('HSET', CURSORS, p, cursor)

  -- Then the line, oldest first; entries of capped users are parked on the way.
  while true do
    if budget == 0 then
      return {'idle', tostring(buried), '0'}
    end
    budget = budget - 1
    local read = redis.call('XREADGROUP', 'GROUP', GROUP, consumer, 'COUNT', 1, 'STREAMS', STREAMS[p], '>')
    if not read then
      break
    end
    local entry = read[1][2][1]
    local id = entry[1]
    local job = entry[2] and entry[2][2]
    local state = job and load(job)
    if state and state.s == 'w' and state.id == id then
      local found = consider(p, id, job, state)
      if found then
        return found
      end
    else
      drop_entry(p, id)
    end
  end
end

local due = redis.call('ZRANGE', DELAYED, 0, 0, 'WITHSCORES')[2]
if due then
  return {'idle', tostring(buried), tostring(math.max(0, tonumber(due) - now))}
end
return {'idle', tostring(buried), '-1'}
