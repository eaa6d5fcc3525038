-- Read a map channel's stream position and, unless limit is 0, its changes.
--
-- As lua/history.lua, except for a channel that has state: the epoch of a channel with keys is
-- never shortened to a placeholder's life (an ephemeral map has no offsets, so its top stays 0).
--
-- KEYS[1]  stream (ids "<offset>-0")
-- KEYS[2]  meta hash: "e" epoch, "s" top offset
-- KEYS[3]  state hash
-- ARGV[1]  the epoch to use when the channel has none
-- ARGV[2]  meta ttl, milliseconds, for a channel whose stream has changes (0: leave its expiry)
-- ARGV[3]  limit: -1 all, 0 position only, N at most N
-- ARGV[4]  since offset as a decimal string, -1 for none
-- ARGV[5]  "1" for newest first
-- ARGV[6]  placeholder ttl, milliseconds: how long a new epoch of an empty channel lives
--
-- Forward: offsets > since. Reverse: offsets < since (all when since is 0 or none). Bounds are
-- complete ids with the exclusive "(" form (see lua/stream_range.lua, the range read this script ends with).
-- Returns {top, epoch, {{id, {field, value, ...}}, ...}}.

local stream_key, meta_key, state_key = KEYS[1], KEYS[2], KEYS[3]

local epoch = redis.call("hget", meta_key, "e")
if not epoch then
  epoch = ARGV[1]
  redis.call("del", stream_key)
  redis.call("hset", meta_key, "e", epoch)
  if redis.call("exists", state_key) == 0 and tonumber(ARGV[6]) > 0 then
    redis.call("pexpire", meta_key, ARGV[6])
  end
end
local top = tonumber(redis.call("hget", meta_key, "s") or "0")
if top > 0 and tonumber(ARGV[2]) > 0 then
  redis.call("pexpire", meta_key, ARGV[2])
end
-- the range read: lua/stream_range.lua, appended when loaded
