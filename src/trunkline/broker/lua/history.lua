-- Read a channel's stream position and, unless limit is 0, its publications.
--
-- KEYS[1]  history stream
-- KEYS[2]  stream metadata hash: "e" epoch, "s" top offset
-- ARGV[1]  the epoch to use when the stream is new (or its metadata expired)
-- ARGV[2]  metadata ttl, milliseconds, for a stream with publications (0: leave its expiry)
-- ARGV[3]  limit: -1 all, 0 position only, N at most N
-- ARGV[4]  since offset as a decimal string (any uint64), -1 for none
-- ARGV[5]  "1" for newest first
-- ARGV[6]  placeholder ttl, milliseconds: how long a stream without publications lives
--
-- Forward: offsets > since. Reverse: offsets < since (all when since is 0 or none); the bounds
-- are explained in lua/stream_range.lua, the range read this script ends with.
-- Returns {top, epoch, {{id, {"d", record}}, ...}}.

local stream_key, meta_key = KEYS[1], KEYS[2]

local epoch = redis.call("hget", meta_key, "e")
if not epoch then
  epoch = ARGV[1]
  redis.call("del", stream_key)
  redis.call("hset", meta_key, "e", epoch)
end
local top = tonumber(redis.call("hget", meta_key, "s") or "0")
local ttl = tonumber(ARGV[2])
if top == 0 then
  ttl = tonumber(ARGV[6])
end
if ttl > 0 then
  redis.call("pexpire", meta_key, ttl)
end
-- the range read: lua/stream_range.lua, appended when loaded
