-- Read a channel's presence after dropping expired entries.
--
-- KEYS[1]  presence data hash: client id -> "<len(user)>:<user><info>"
-- KEYS[2]  presence expiry zset: client id -> expiry time (server clock, ms)
-- ARGV[1]  "all": return HGETALL; "stats": return {clients, distinct users}

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

if ARGV[1] ~= "stats" then
  return redis.call("hgetall", data_key)
end
local values = redis.call("hvals", data_key)
local seen, users = {}, 0
for _, value in ipairs(values) do
  local sep = string.find(value, ":", 1, true)
  local user = string.sub(value, sep + 1, sep + tonumber(string.sub(value, 1, sep - 1)))
  if not seen[user] then
    seen[user] = true
    users = users + 1
  end
end
return {#values, users}
