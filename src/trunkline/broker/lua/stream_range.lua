-- The range read that ends lua/history.lua and lua/map_stream.lua (appended to each when it is
-- loaded, see broker/redis.py _Script.load): it expects the locals stream_key, top and epoch,
-- and reads ARGV[3] (limit: -1 all, 0 position only, N at most N), ARGV[4] (since offset as a
-- decimal string, -1 for none) and ARGV[5] ("1" for newest first).
--
-- Forward: offsets > since. Reverse: offsets < since (all when since is 0 or none).
-- Offsets are compared as numbers only against the top (small); ranges use the
-- exclusive "(" form, so no arithmetic on a client's offset can overflow. Bounds are
-- complete ids ("<offset>-0"): an incomplete end id means "<offset>-<max seq>", so
-- "(N" as the high end of XREVRANGE would still include N.
-- Returns {top, epoch, entries}.

local limit = tonumber(ARGV[3])
if limit == 0 or top == 0 then
  return {top, epoch, {}}
end
local since_text = ARGV[4]
local since = tonumber(since_text)
local entries
if ARGV[5] == "1" then
  local high = "+"
  if since > 0 and since <= top then
    high = "(" .. since_text .. "-0"
  end
  if limit > 0 then
    entries = redis.call("xrevrange", stream_key, high, "-", "COUNT", limit)
  else
    entries = redis.call("xrevrange", stream_key, high, "-")
  end
else
  if since >= top then
    return {top, epoch, {}}
  end
  local low = "-"
  if since >= 0 then
    low = "(" .. since_text .. "-0"
  end
  if limit > 0 then
    entries = redis.call("xrange", stream_key, low, "+", "COUNT", limit)
  else
    entries = redis.call("xrange", stream_key, low, "+")
  end
end
return {top, epoch, entries}
