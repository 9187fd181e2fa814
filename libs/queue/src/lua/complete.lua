-- ARGV: priority, entry, job, the user's cap. Returns {'done'}, or {'noop'} when the
-- delivery was settled already.
local p, id, job, cap = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
drop_entry(p, id)
local state = load(job)
if not state or state.s ~= 'f' or state.id ~= id then
  return {'noop'}
end
redis.call('HDEL', JOBS, job)
release(state.u, cap)
return {'done'}
