-- PUBLISH from the node that owns a channel's slot (Redis Cluster).
--
-- KEYS[1]  a key of the channel (its metadata hash): only routes the call to the channel's slot
-- ARGV[1]  pub/sub channel
-- ARGV[2]  message
--
-- A cluster relays a PUBLISH from the node it was sent to; messages sent to different
-- nodes may overtake each other. Sending every message of one channel through its
-- slot's node (as publish.lua does) keeps them in order for every subscriber.

return redis.call("publish", ARGV[1], ARGV[2])
