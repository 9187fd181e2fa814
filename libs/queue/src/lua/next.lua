-- One look for up to `want` deliveries for a consumer. ARGV (after the bound): consumer,
-- visibility timeout (ms), max attempts, rate limit jobs (0: none), rate limit window
-- (ms), dead-letter retention, want, whether to scan for stalled deliveries ('1': the
-- caller's turn, every tenth of the timeout), then the entry held from the last look
-- (priority or 0, entry id, job), then pairs of user id and cap the caller was asked for.
-- Returns {buried, tail, t1, t2, t3, t4, deliveries...}: how many stalled jobs were
-- dead-lettered, why the look stopped, and 7 items per delivery (priority, entry, job,
-- user, attempt, waited ms or -1, reclaimed 0/1). The tail:
--   'full': `want` deliveries found
--   'candidate' (t1-t4: priority, entry, job, user): the caller must say the user's cap
--     and look again holding this entry (a rate-limit token is reserved for it)
--   'limited' (t1: ms until a token, or -1 at the bound: a release wakes the workers)
--   'idle' (t1: ms until a delayed job is due, -1 for none, 0 when this look stopped
--     early after parking many entries, to keep scripts short: look again at once)
local consumer = ARGV[2]
local visibility = tonumber(ARGV[3])
local max_attempts = tonumber(ARGV[4])
local rate_jobs, rate_per = tonumber(ARGV[5]), tonumber(ARGV[6])
local retention = tonumber(ARGV[7])
local want = tonumber(ARGV[8])
local scan_due = ARGV[9] == '1'
local held_p, held_id, held_job = tonumber(ARGV[10]), ARGV[11], ARGV[12]
local now = now_ms()
-- How long a cap a worker said holds before it is asked again.
local CAP_TTL = 10000
local caps = {}
for i = 13, #ARGV, 2 do
  local cap = tonumber(ARGV[i + 1])
  caps[ARGV[i]] = cap
  redis.call('HSET', CAPS, ARGV[i], cap .. ':' .. (now + CAP_TTL))
end
local buried = 0
local out = {}
-- Entries one look may read before it gives Redis back to other clients.
local budget = 200 + want

local function reply(tail, t1, t2, t3, t4)
  local result = {tostring(buried), tail, t1 or '', t2 or '', t3 or '', t4 or ''}
  for _, item in ipairs(out) do
    result[#result + 1] = item
  end
  return result
end

local function known_cap(user)
  local cap = caps[user]
  if cap then
    return cap
  end
  local raw = redis.call('HGET', CAPS, user)
  if raw then
    local value, expiry = string.match(raw, '^(%d+):(%d+)$')
    if value and tonumber(expiry) > now then
      cap = tonumber(value)
      caps[user] = cap
      return cap
    end
  end
  return nil
end

-- Delayed jobs that are due go to the end of their lines.
for _, job in ipairs(redis.call('ZRANGEBYSCORE', DELAYED, '-inf', now, 'LIMIT', 0, 100 + want)) do
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

local limit = bound()
local flying = in_flight()
local function at_bound()
  return limit > 0 and flying >= limit
end

local function deliver(p, id, job, state, waited, reclaimed)
  for _, item in ipairs({tostring(p), id, job, state.u, tostring(state.a), tostring(waited), reclaimed}) do
    out[#out + 1] = item
  end
end

-- Delivers a waiting job read from line p, or parks it when its user is at `cap`.
-- Returns whether it was delivered.
local function admit(p, id, job, state, cap, prepaid)
  local running = tonumber(redis.call('HGET', RUNNING, state.u) or '0')
  if running >= share(cap, limit) then
    drop_entry(p, id)
    park(job, state)
    if prepaid then
      refund()
    end
    return false
  end
  redis.call('HINCRBY', RUNNING, state.u, 1)
  redis.call('INCR', INFLIGHT)
  flying = flying + 1
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
  deliver(p, id, job, state, waited, '0')
  return true
end

-- An entry of line p that was never admitted: deliver it or park it (nil), or ask for
-- the cap (a reply).
local function consider(p, id, job, state)
  local cap = known_cap(state.u)
  if cap then
    admit(p, id, job, state, cap, false)
    return nil
  end
  spend()
  return reply('candidate', tostring(p), id, job, state.u)
end

-- Whether this look may deliver more: wanted, a token left. A reclaim needs no more
-- (it takes over its delivery's slot)...
local function wanted()
  return #out < want * 7 and not (available and available < 1)
end

-- ...a new delivery needs room under the bound too.
local function room()
  return wanted() and not at_bound()
end

local function stop()
  if #out < want * 7 and at_bound() then
    return reply('limited', '-1')
  end
  if #out < want * 7 and available and available < 1 then
    local wait = math.ceil((1 - available) * rate_per / rate_jobs)
    return reply('limited', tostring(math.max(1, wait)))
  end
  return reply('full')
end

-- Hands an entry this look holds but will not deliver back to the group, idle as if
-- stalled, so the next look's scan takes it up at once instead of after the timeout.
local function hand_back(p, id)
  redis.call('XCLAIM', STREAMS[p], GROUP, consumer, 0, id, 'IDLE', visibility + 1, 'JUSTID')
  redis.call('HSET', CURSORS, 'rescan', 1)
end

-- How many entries to read next: no more than wanted, than the bound and the tokens
-- leave room for, or than the budget.
local function batch()
  local count = math.min(want - #out / 7, budget)
  if limit > 0 then
    count = math.min(count, limit - flying)
  end
  if available then
    count = math.min(count, math.floor(available))
  end
  return math.max(1, count)
end

-- The entry held since the last look, its token already spent.
if held_p > 0 then
  local state = load(held_job)
  if state and state.s == 'w' and state.id == held_id then
    if at_bound() then
      refund()
      hand_back(held_p, held_id)
    else
      admit(held_p, held_id, held_job, state, caps[state.u] or 1, true)
    end
  else
    drop_entry(held_p, held_id)
    refund()
  end
end

-- Deliveries unsettled past the visibility timeout (and entries read by a worker that
-- went away before admitting them) are looked for when the caller says (each worker
-- every tenth of the timeout: none can be found sooner, and the scan is the costly part
-- of a look), and at once after a look handed entries back.
local rescan = redis.call('HGET', CURSORS, 'rescan')
local scan = scan_due or rescan

for p = 1, 3 do
  if not wanted() then
    return stop()
  end
  -- The cursor is kept so the scan goes round the pending entries rather than looking
  -- at the first few only.
  if scan then
    if rescan then
      redis.call('HDEL', CURSORS, 'rescan')
      rescan = false
    end
    local cursor = redis.call('HGET', CURSORS, p) or '0-0'
    for _ = 1, 10 do
      if not wanted() then
        break
      end
      local claimed = redis.call('XAUTOCLAIM', STREAMS[p], GROUP, consumer, visibility, cursor, 'COUNT', batch())
      cursor = claimed[1]
      for at, entry in ipairs(claimed[2]) do
        local id = entry[1]
        local job = entry[2] and entry[2][2]
        local state = job and load(job)
        if not state or state.id ~= id then
          drop_entry(p, id)
        elseif not wanted() or (state.s == 'w' and at_bound()) then
          hand_back(p, id)
        elseif state.s == 'w' then
          -- Read by a consumer that went away before admitting it.
          local asked = consider(p, id, job, state)
          if asked then
            for rest = at + 1, #claimed[2] do
              hand_back(p, claimed[2][rest][1])
            end
            redis.call('HSET', CURSORS, p, cursor)
            return asked
          end
        elseif state.a >= max_attempts then
          drop_entry(p, id)
          local user = state.u
          bury(job, state, 'not settled within the visibility timeout', retention, now)
          release(user, 1, 1, limit)
          flying = in_flight()
          buried = buried + 1
        else
          state.a = state.a + 1
          state.c = consumer
          save(job, state)
          spend()
          deliver(p, id, job, state, -1, '1')
        end
      end
      if cursor == '0-0' then
        break
      end
    end
    redis.call('HSET', CURSORS, p, cursor)
  end

  -- Then the line, oldest first; entries of capped users are parked on the way.
  while room() do
    if budget <= 0 then
      return reply('idle', '0')
    end
    local read = redis.call('XREADGROUP', 'GROUP', GROUP, consumer, 'COUNT', batch(), 'STREAMS', STREAMS[p], '>')
    if not read then
      break
    end
    local entries = read[1][2]
    budget = budget - #entries
    for at, entry in ipairs(entries) do
      local id = entry[1]
      local job = entry[2] and entry[2][2]
      local state = job and load(job)
      if not state or state.s ~= 'w' or state.id ~= id then
        drop_entry(p, id)
      elseif not room() then
        hand_back(p, id)
      else
        local asked = consider(p, id, job, state)
        if asked then
          for rest = at + 1, #entries do
            hand_back(p, entries[rest][1])
          end
          return asked
        end
      end
    end
  end
end

if #out > 0 or at_bound() then
  return stop()
end
local due = redis.call('ZRANGE', DELAYED, 0, 0, 'WITHSCORES')[2]
if due then
  return reply('idle', tostring(math.max(0, tonumber(due) - now)))
end
return reply('idle', '-1')
