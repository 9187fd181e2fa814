-- ARGV (after the bound): priority, entry, job, attempt. Resets the entry's idle time
-- (XCLAIM to its own consumer). Returns {'ok'}, or {'lost'} when the delivery is no
-- longer held.
local p, id, job, attempt = tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5])
local state = load(job)
if not state or state.s ~= 'f' or state.id ~= id or state.a ~= attempt then
  return {'lost'}
end
local claimed = redis.call('XCLAIM', STREAMS[p], GROUP, state.c, 0, id, 'JUSTID')
if #claimed == 0 then
  return {'lost'}
end
return {'ok'}
