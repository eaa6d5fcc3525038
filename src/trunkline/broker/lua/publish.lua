-- Add one publication to a channel's history stream and publish it, atomically.
--
-- KEYS[1]  history stream (XADD ids are "<offset>-0")
-- KEYS[2]  stream metadata hash: "e" epoch, "s" top offset
-- ARGV[1]  the encoded publication without offset: a JSON object "{...}"
-- ARGV[2]  history size (exact MAXLEN)
-- ARGV[3]  history ttl, milliseconds, counted from this publication
-- ARGV[4]  metadata ttl, milliseconds (0: the metadata does not expire)
-- ARGV[5]  the epoch to use when the stream is new (or its metadata expired)
-- ARGV[6]  pub/sub channel of the Trunkline channel
--
-- Stores and publishes the publication with "offset":N inserted before the final
-- "}" (like base.with_offset); the pub/sub message is "p<offset>:<bytes>".
-- Returns {offset, epoch}.

local stream_key, meta_key = KEYS[1], KEYS[2]
local data = ARGV[1]

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
end

local offset = string.format("%d", top)
local stored
if data == "{}" then
  stored = '{"offset":' .. offset .. '}'
else
  stored = string.sub(data, 1, -2) .. ',"offset":' .. offset .. '}'
end
redis.call("xadd", stream_key, "MAXLEN", ARGV[2], offset, "d", stored)
redis.call("pexpire", stream_key, ARGV[3])
redis.call("publish", ARGV[6], "p" .. offset .. ":" .. stored)
return {top, epoch}
