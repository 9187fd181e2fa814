-- Returns {high, normal, low, delayed, in flight, dead}; waiting counts include parked jobs.
local depth = {}
for p = 1, 3 do
  depth[p] = tostring(waiting(p) + redis.call('ZCARD', PARKED[p]))
end
depth[4] = tostring(redis.call('ZCARD', DELAYED))
depth[5] = tostring(in_flight())
depth[6] = tostring(redis.call('XLEN', DEAD))
return depth
