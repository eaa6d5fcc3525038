-- Write or remove one key of a map channel, append the change to its stream and PUBLISH it, atomically.
--
-- KEYS[1]  state hash: key -> "<offset>:<record>" (the offset of the write that set it)
-- KEYS[2]  order zset: key -> score (0 for every key of an unordered map: lexicographic pages)
-- KEYS[3]  expire zset: key -> expiry time (Redis clock, ms)
-- KEYS[4]  stream (XADD ids "<offset>-0"; field "d" holds the record)
-- KEYS[5]  meta hash: "e" epoch, "s" top offset; "ss"/"st"/"mt" the stream settings the cleanup uses
-- KEYS[6]  idempotent result ("<offset>:<epoch>"), used when ARGV[12] > 0
-- KEYS[7]  cleanup registration zset: channel -> earliest key expiry (one for all channels)
-- ARGV[1]  key
-- ARGV[2]  the record the state keeps (msgpack; offset and epoch travel beside it)
-- ARGV[3]  the record the stream and the live update carry ("" = ARGV[2])
-- ARGV[4]  mode: "" replace, "if_new", "if_exists", "remove"
-- ARGV[5]  score
-- ARGV[6]  key ttl, ms (0: the key never expires)
-- ARGV[7]  stream size (exact MAXLEN; 0: ephemeral, no stream, offsets stay 0)
-- ARGV[8]  stream ttl, ms
-- ARGV[9]  meta ttl, ms (0: the epoch and top offset never expire)
-- ARGV[10] the epoch to use when the channel has none (new, cleared or expired)
-- ARGV[11] pub/sub channel of the map channel
-- ARGV[12] idempotent result ttl, ms (0: no idempotency key)
-- ARGV[13] max keys (0: unlimited)
-- ARGV[14] "1": an if_new write of an existing key still renews its ttl
-- ARGV[15] the channel name (member of the cleanup registration)
-- ARGV[16] placeholder ttl, ms: how long the epoch of an empty channel lives without a write (an
--          ephemeral channel after its last key went, or one a suppressed write created)
--
-- The pub/sub message is "p<offset>:<epoch>:<record>".
-- Returns {status, offset, epoch}: status "ok", "idempotency", "key_exists", "key_not_found" or
-- "limit" (a new key into a full channel); offset and epoch are the position after the call.

local state_key, order_key, expire_key, stream_key, meta_key, result_key, cleanup_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local key, mode = ARGV[1], ARGV[4]
local key_ttl = tonumber(ARGV[6])
local stream_size = tonumber(ARGV[7])
local meta_ttl = tonumber(ARGV[9])
local result_ttl = tonumber(ARGV[12])
local max_keys = tonumber(ARGV[13])

if result_ttl > 0 then
  local cached = redis.call("get", result_key)
  if cached then
    local sep = string.find(cached, ":", 1, true)
    return {"idempotency", tonumber(string.sub(cached, 1, sep - 1)), string.sub(cached, sep + 1)}
  end
end

local epoch = redis.call("hget", meta_key, "e")
local created = false
if not epoch then
  -- A new epoch: stream items left over from an older one must not mix with its offsets.
  epoch = ARGV[10]
  created = true
  redis.call("del", stream_key)
  redis.call("hset", meta_key, "e", epoch)
end
-- The meta outlives the keys that expire, so the cleanup still finds the stream settings.
local meta_pttl = meta_ttl
if meta_ttl > 0 and key_ttl > 0 and key_ttl + 60000 > meta_ttl then
  meta_pttl = key_ttl + 60000
end

local function keep_meta()
  if meta_pttl > 0 then
    redis.call("pexpire", meta_key, meta_pttl)
  else
    redis.call("persist", meta_key)
  end
end

-- A suppressed write changes nothing: an epoch it had to create for an empty channel lives a
-- placeholder's time (failed writes to random channels cannot pile up state).
local function suppressed(status)
  local placeholder = tonumber(ARGV[16])
  if created and placeholder > 0 and redis.call("exists", state_key) == 0 then
    redis.call("pexpire", meta_key, placeholder)
  end
  return {status, tonumber(redis.call("hget", meta_key, "s") or "0"), epoch}
end

local function now_ms()
  local t = redis.call("time")
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local exists = redis.call("hexists", state_key, key) == 1
if mode == "if_new" and exists then
  if ARGV[14] == "1" and key_ttl > 0 then
    local expire_at = now_ms() + key_ttl
    redis.call("zadd", expire_key, expire_at, key)
    redis.call("zadd", cleanup_key, "LT", expire_at, ARGV[15])
    redis.call("hset", meta_key, "ss", ARGV[7], "st", ARGV[8], "mt", meta_pttl)
    keep_meta()
  end
  return suppressed("key_exists")
end
if (mode == "if_exists" or mode == "remove") and not exists then
  return suppressed("key_not_found")
end
if mode ~= "remove" and not exists and max_keys > 0 and redis.call("hlen", state_key) >= max_keys then
  return suppressed("limit")
end

keep_meta()

local offset = 0
local record = ARGV[3]
if record == "" then
  record = ARGV[2]
end
if stream_size > 0 then
  offset = redis.call("hincrby", meta_key, "s", 1)
  redis.call("xadd", stream_key, "MAXLEN", stream_size, string.format("%d-0", offset), "d", record)
  redis.call("pexpire", stream_key, ARGV[8])
end

if mode == "remove" then
  redis.call("hdel", state_key, key)
  redis.call("zrem", order_key, key)
  redis.call("zrem", expire_key, key)
  -- The registration may now name a channel without expiring keys: the cleanup drops it.
  if stream_size == 0 and redis.call("exists", state_key) == 0 then
    -- An emptied ephemeral channel has nothing to resume: its epoch lives a placeholder's time.
    local left = redis.call("pttl", meta_key)
    local placeholder = tonumber(ARGV[16])
    if placeholder > 0 and (left < 0 or left > placeholder) then
      redis.call("pexpire", meta_key, placeholder)
    end
  end
else
  redis.call("hset", state_key, key, string.format("%d:", offset) .. ARGV[2])
  redis.call("zadd", order_key, ARGV[5], key)
  if key_ttl > 0 then
    local expire_at = now_ms() + key_ttl
    redis.call("zadd", expire_key, expire_at, key)
    -- LT: the registration holds the earliest expiry; a later one leaves it (the cleanup corrects it).
    redis.call("zadd", cleanup_key, "LT", expire_at, ARGV[15])
    redis.call("hset", meta_key, "ss", stream_size, "st", ARGV[8], "mt", meta_pttl)
  elseif exists then
    redis.call("zrem", expire_key, key)
  end
end

local offset_text = string.format("%d", offset)
redis.call("publish", ARGV[11], "p" .. offset_text .. ":" .. epoch .. ":" .. record)
if result_ttl > 0 then
  redis.call("set", result_key, offset_text .. ":" .. epoch, "PX", result_ttl)
end
return {"ok", offset, epoch}
