-- Remove a map channel's expired keys, each as a removal appended to its stream and PUBLISHed, atomically.
--
-- Several nodes may run this for the same channel at once: the script is atomic, so a key
-- that one run removed is no longer expired (nor present) for the next, and every removal is
-- delivered once.
--
-- KEYS[1]  state hash
-- KEYS[2]  order zset
-- KEYS[3]  expire zset: key -> expiry time (Redis clock, ms)
-- KEYS[4]  stream
-- KEYS[5]  meta hash: "e" epoch, "s" top offset, "ss" stream size, "st" stream ttl (ms)
-- KEYS[6]  cleanup registration zset: channel -> earliest key expiry
-- ARGV[1]  most keys to remove in this run
-- ARGV[2]  the epoch to use when the channel has none
-- ARGV[3]  pub/sub channel of the map channel
-- ARGV[4]  the channel name (member of the cleanup registration)
-- ARGV[5]  placeholder ttl, ms: how long the epoch of an ephemeral channel outlives its last key
--
-- The pub/sub message of a removal is "x<offset>:<epoch>:<time ms>:<key>"; its stream entry has
-- the fields "k" (key) and "t" (time ms) instead of a record.
-- Returns the number of keys removed.

local state_key, order_key, expire_key, stream_key, meta_key, cleanup_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local t = redis.call("time")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_text = string.format("%d", now)

local expired = redis.call("zrangebyscore", expire_key, "-inf", now_text, "LIMIT", 0, tonumber(ARGV[1]))
if #expired > 0 then
  local epoch = redis.call("hget", meta_key, "e")
  local created = false
  if not epoch then
    epoch = ARGV[2]
    created = true
    redis.call("del", stream_key)
    redis.call("hset", meta_key, "e", epoch)
  end
  local settings = redis.call("hmget", meta_key, "ss", "st")
  local stream_size = tonumber(settings[1] or "0")
  local stream_ttl = tonumber(settings[2] or "0")
  local keeps_stream = stream_size > 0 and stream_ttl > 0
  for _, key in ipairs(expired) do
    local offset = 0
    if keeps_stream then
      offset = redis.call("hincrby", meta_key, "s", 1)
      redis.call("xadd", stream_key, "MAXLEN", stream_size, string.format("%d-0", offset), "k", key, "t", now_text)
      redis.call("pexpire", stream_key, stream_ttl)
    end
    redis.call("hdel", state_key, key)
    redis.call("zrem", order_key, key)
    redis.call("zrem", expire_key, key)
    redis.call("publish", ARGV[3], string.format("x%d:", offset) .. epoch .. ":" .. now_text .. ":" .. key)
  end
  local placeholder = tonumber(ARGV[5])
  if (created or not keeps_stream) and placeholder > 0 and redis.call("exists", state_key) == 0 then
    local left = redis.call("pttl", meta_key)
    if left < 0 or left > placeholder then
      redis.call("pexpire", meta_key, placeholder)
    end
  end
end

local earliest = redis.call("zrange", expire_key, 0, 0, "WITHSCORES")
if #earliest > 0 then
  redis.call("zadd", cleanup_key, earliest[2], ARGV[4])
else
  redis.call("zrem", cleanup_key, ARGV[4])
end
return #expired
