-- Give a channel's stream a new epoch if it still has the one a node saw reused offsets in.
--
-- KEYS[1]  stream metadata hash: "e" epoch, "s" top offset
-- ARGV[1]  the epoch in which an offset was handed out twice
-- ARGV[2]  the new epoch
--
-- After a failover (or a restart from an older snapshot) the stream may end below
-- offsets that were already published, and the next publications reuse them with the
-- same epoch: positions in that epoch no longer name one publication each. A new epoch
-- makes every such position fail recovery (the client is told) instead of skipping
-- the reused offsets. Compare-and-set: several nodes may see it, one rotation is enough.
-- Returns the epoch in force afterwards.

local epoch = redis.call("hget", KEYS[1], "e")
if epoch == ARGV[1] then
  redis.call("hset", KEYS[1], "e", ARGV[2])
  return ARGV[2]
end
return epoch or ""
