-- Read a channel's stream position and, unless limit is 0, its publications.
--
-- KEYS[1]  history stream
-- KEYS[2]  stream metadata hash: "e" epoch, "s" top offset
-- ARGV[1]  the epoch to use when the stream is new (or its metadata expired)
-- ARGV[2]  metadata ttl, milliseconds (0: leave the metadata's expiry as it is)
-- ARGV[3]  limit: -1 all, 0 position only, N at most N
-- ARGV[4]  since offset, -1 for none
-- ARGV[5]  "1" for newest first
--
-- Forward: offsets > since. Reverse: offsets < since (all when since is 0 or none).
-- Returns {top, epoch, {{id, {"d", bytes}}, ...}}.

local stream_key, meta_key = KEYS[1], KEYS[2]

local epoch = redis.call("hget", meta_key, "e")
if not epoch then
  epoch = ARGV[1]
  redis.call("del", stream_key)
  redis.call("hset", meta_key, "e", epoch)
end
if tonumber(ARGV[2]) > 0 then
  redis.call("pexpire", meta_key, ARGV[2])
end
local top = tonumber(redis.call("hget", meta_key, "s") or "0")

local limit = tonumber(ARGV[3])
if limit == 0 then
  return {top, epoch, {}}
end
local since = tonumber(ARGV[4])
local entries
if ARGV[5] == "1" then
  local high = "+"
  if since > 0 then
    high = string.format("%d", since - 1)
  end
  if limit > 0 then
    entries = redis.call("xrevrange", stream_key, high, "-", "COUNT", limit)
  else
    entries = redis.call("xrevrange", stream_key, high, "-")
  end
else
  local low = "-"
  if since >= 0 then
    low = string.format("%d", since + 1)
  end
  if limit > 0 then
    entries = redis.call("xrange", stream_key, low, "+", "COUNT", limit)
  else
    entries = redis.call("xrange", stream_key, low, "+")
  end
end
return {top, epoch, entries}
