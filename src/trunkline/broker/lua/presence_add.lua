-- Add or refresh one presence entry; each entry expires on its own.
--
-- KEYS[1]  presence data hash: client id -> "<len(user)>:<user><info>"
-- KEYS[2]  presence expiry zset: client id -> expiry time (server clock, ms)
-- ARGV[1]  client id
-- ARGV[2]  value for the data hash
-- ARGV[3]  ttl, milliseconds (0: the entry does not expire)
--
-- Expired entries are dropped on the way, and both keys expire with their
-- longest-lived entry, so an abandoned channel leaves nothing behind.

local data_key, expire_key = KEYS[1], KEYS[2]
local t = redis.call("time")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local expired = redis.call("zrangebyscore", expire_key, "-inf", now)
if #expired > 0 then
  for i = 1, #expired, 1000 do
    redis.call("hdel", data_key, unpack(expired, i, math.min(i + 999, #expired)))
  end
  redis.call("zremrangebyscore", expire_key, "-inf", now)
end

local ttl = tonumber(ARGV[3])
local score = "+inf"
if ttl > 0 then
  score = string.format("%d", now + ttl)
end
redis.call("zadd", expire_key, score, ARGV[1])
redis.call("hset", data_key, ARGV[1], ARGV[2])

local last = redis.call("zrange", expire_key, -1, -1, "WITHSCORES")
if last[2] == "inf" then
  redis.call("persist", data_key)
  redis.call("persist", expire_key)
else
  local at = string.format("%d", tonumber(last[2]))
  redis.call("pexpireat", data_key, at)
  redis.call("pexpireat", expire_key, at)
end
return 1
