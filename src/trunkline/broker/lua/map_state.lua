-- Read one page of a map channel's state and the channel's stream position.
--
-- KEYS[1]  state hash: key -> "<offset>:<record>"
-- KEYS[2]  order zset: key -> score (0 for every key of an unordered map)
-- KEYS[3]  meta hash: "e" epoch, "s" top offset
-- ARGV[1]  the epoch to use when the channel has none
-- ARGV[2]  meta ttl, milliseconds, for a channel with a stream (0: leave its expiry)
-- ARGV[3]  placeholder ttl, milliseconds: how long a new epoch of an empty channel lives (0: forever)
-- ARGV[4]  order: "key" (one key: ARGV[7]), "lex" (key order), "asc" or "desc" (score, then key)
-- ARGV[5]  limit (> 0)
-- ARGV[6]  cursor score ("" for the first page; the score text as Redis gave it)
-- ARGV[7]  cursor key (the last key of the previous page), or the key to read
--
-- Ordered pages follow the zset: "desc" is (score, key) descending, "asc" ascending. A cursor
-- (score, key) resumes after that entry. Unordered pages use ZRANGEBYLEX (all scores 0). Keys
-- compare as Redis compares members (bytes), never in Lua (whose comparison follows the locale).
-- Returns {top, epoch, entries, 1 if there is a next page else 0, next cursor score, next cursor
-- key}; entries is one string, "<length>:<value>" for each entry in page order (the value holds
-- the key: it is the state record).

local state_key, order_key, meta_key = KEYS[1], KEYS[2], KEYS[3]
local order = ARGV[4]
local limit = tonumber(ARGV[5])
local cursor_score, cursor_key = ARGV[6], ARGV[7]

local epoch = redis.call("hget", meta_key, "e")
if not epoch then
  epoch = ARGV[1]
  redis.call("hset", meta_key, "e", epoch)
  if redis.call("exists", state_key) == 0 then
    -- Nothing written yet: a read alone must not leave state behind for long.
    if tonumber(ARGV[3]) > 0 then
      redis.call("pexpire", meta_key, ARGV[3])
    end
  elseif tonumber(ARGV[2]) > 0 then
    redis.call("pexpire", meta_key, ARGV[2])
  end
elseif tonumber(ARGV[2]) > 0 and redis.call("hexists", meta_key, "s") == 1 then
  redis.call("pexpire", meta_key, ARGV[2])
end
local top = tonumber(redis.call("hget", meta_key, "s") or "0")

if order == "key" then
  local value = redis.call("hget", state_key, cursor_key)
  if value then
    return {top, epoch, string.len(value) .. ":" .. value, 0, "", ""}
  end
  return {top, epoch, "", 0, "", ""}
end

local keys = {}
local scores = {}
local more = false
if order == "lex" then
  local low = "-"
  if cursor_key ~= "" then
    low = "(" .. cursor_key
  end
  keys = redis.call("zrangebylex", order_key, low, "+", "LIMIT", 0, limit + 1)
  if #keys > limit then
    more = true
    keys[#keys] = nil
  end
else
  local desc = order == "desc"
  local flat
  if cursor_score == "" then
    if desc then
      flat = redis.call("zrevrange", order_key, 0, limit, "WITHSCORES")
    else
      flat = redis.call("zrange", order_key, 0, limit, "WITHSCORES")
    end
  else
    -- Resume right after the cursor's entry, by its rank. When the key has moved or is gone,
    -- it is put back at the cursor's score for this read only (the script is atomic, nobody
    -- sees it), so the rank comes from Redis' own (score, key) order.
    local current = redis.call("zscore", order_key, cursor_key)
    if current ~= cursor_score then
      redis.call("zadd", order_key, cursor_score, cursor_key)
    end
    local rank
    if desc then
      rank = redis.call("zrevrank", order_key, cursor_key)
      flat = redis.call("zrevrange", order_key, rank + 1, rank + 1 + limit, "WITHSCORES")
    else
      rank = redis.call("zrank", order_key, cursor_key)
      flat = redis.call("zrange", order_key, rank + 1, rank + 1 + limit, "WITHSCORES")
    end
    if current == false then
      redis.call("zrem", order_key, cursor_key)
    elseif current ~= cursor_score then
      redis.call("zadd", order_key, current, cursor_key)
    end
  end
  for i = 1, #flat, 2 do
    keys[#keys + 1] = flat[i]
    scores[#scores + 1] = flat[i + 1]
  end
  if #keys > limit then
    more = true
    keys[#keys] = nil
    scores[#scores] = nil
  end
end

if #keys == 0 then
  return {top, epoch, "", 0, "", ""}
end
-- One bulk string for the whole page ("<length>:<value>" each): a client parses one reply
-- instead of thousands.
local parts = {}
for first = 1, #keys, 1000 do
  local last = math.min(first + 999, #keys)
  local values = redis.call("hmget", state_key, unpack(keys, first, last))
  for i = 1, last - first + 1 do
    local value = values[i]
    if value then
      parts[#parts + 1] = string.len(value) .. ":"
      parts[#parts + 1] = value
    end
  end
end
local entries = table.concat(parts)
if more then
  return {top, epoch, entries, 1, scores[#scores] or "", keys[#keys]}
end
return {top, epoch, entries, 0, "", ""}
