-- The channels of one cleanup registration whose earliest key expiry has come (Redis clock).
--
-- KEYS[1]  cleanup registration zset: channel -> earliest key expiry (ms)
-- ARGV[1]  most channels to return
-- Returns the channel names, earliest first.

local t = redis.call("time")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call("zrangebyscore", KEYS[1], "-inf", string.format("%d", now), "LIMIT", 0, tonumber(ARGV[1]))
