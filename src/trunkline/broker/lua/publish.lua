-- Publish one publication, adding it to the channel's history stream if it keeps one, atomically.
--
-- KEYS[1]  history stream (XADD ids are "<offset>-0")
-- KEYS[2]  stream metadata hash: "e" epoch, "s" top offset
-- KEYS[3]  idempotent result of this publish ("<offset>:<epoch>"), used when ARGV[7] > 0
-- ARGV[1]  the publication record, binary (msgpack); offset and epoch travel beside it
-- ARGV[2]  history size (exact MAXLEN); 0: no history
-- ARGV[3]  history ttl, milliseconds, counted from this publication
-- ARGV[4]  metadata ttl, milliseconds (0: the metadata does not expire)
-- ARGV[5]  the epoch to use when the stream is new (or its metadata expired)
-- ARGV[6]  pub/sub channel of the Trunkline channel
-- ARGV[7]  idempotent result ttl, milliseconds (0: no idempotency key)
--
-- The pub/sub message is "p<offset>:<epoch>:<record>" ("p0::<record>" without history).
-- Returns {offset, epoch, 1 if this was a repeat of an idempotent publish else 0}.

local stream_key, meta_key, result_key = KEYS[1], KEYS[2], KEYS[3]
local idempotent = tonumber(ARGV[7]) > 0

if idempotent then
  local cached = redis.call("get", result_key)
  if cached then
    local sep = string.find(cached, ":", 1, true)
    return {tonumber(string.sub(cached, 1, sep - 1)), string.sub(cached, sep + 1), 1}
  end
end

if ARGV[2] == "0" then
  redis.call("publish", ARGV[6], "p0::" .. ARGV[1])
  if idempotent then
    redis.call("set", result_key, "0:", "PX", ARGV[7])
  end
  return {0, "", 0}
end

local epoch = redis.call("hget", meta_key, "e")
if not epoch then
  -- A new stream: items left over from an expired one must not mix with its offsets.
  epoch = ARGV[5]
  redis.call("del", stream_key)
  redis.call("hset", meta_key, "e", epoch)
end
local top = redis.call("hincrby", meta_key, "s", 1)
if tonumber(ARGV[4]) > 0 then
  redis.call("pexpire", meta_key, ARGV[4])
else
  redis.call("persist", meta_key)
end

local offset = string.format("%d", top)
redis.call("xadd", stream_key, "MAXLEN", ARGV[2], offset, "d", ARGV[1])
redis.call("pexpire", stream_key, ARGV[3])
redis.call("publish", ARGV[6], "p" .. offset .. ":" .. epoch .. ":" .. ARGV[1])
if idempotent then
  redis.call("set", result_key, offset .. ":" .. epoch, "PX", ARGV[7])
end
return {top, epoch, 0}
