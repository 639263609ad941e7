"""The two Lua scripts of the Redis backend: claim a partition, compare-and-apply a unit.

They hold no rule of the pipeline: the decision is made in Python by the same pure
modules as with RocksDB (redis_batch.py). All they do is the atomic part:

- CLAIM: a worker that was assigned a partition in consumer-group generation g takes a
  new fencing token for it, unless the partition is held by a newer generation that
  wrote within the last `stale` seconds (a zombie's late claim is refused; a group that
  was deleted and recreated, so that generations restarted, takes over once the old
  holder has been silent that long).
- APPLY: with the caller's token still the partition's token, and every key it read
  still at the version it read (the index ranges it scanned still holding the same
  members), write all its values under one new version and change the index, else
  change nothing and answer what differs.

Layout of one table partition (every key in the hash slot of `{<prefix><table>:<p>}`):
`...:v` hash key -> "<version>:<value>", `...:i` sorted set of index keys (score 0,
ordered by bytes), `...:f` hash: token, generation, at (last claim or apply, server
time), claims and version (counters that never go back).
"""

from __future__ import annotations

CLAIM = """
local gen = tonumber(ARGV[1])
local held = redis.call('HMGET', KEYS[1], 'generation', 'at')
local now = tonumber(redis.call('TIME')[1])
if held[1] and tonumber(held[1]) > gen then
  if held[2] and now - tonumber(held[2]) < tonumber(ARGV[2]) then
    return {0, held[1]}
  end
end
local token = redis.call('HINCRBY', KEYS[1], 'claims', 1)
redis.call('HSET', KEYS[1], 'generation', ARGV[1], 'token', token, 'at', now)
return {1, token}
"""

# ARGV: token, then nreads, (key, version)*, nscans, (start, stop, limit, count,
# member*)*, nsets, (key, value)*, ndels, key*, nadds, member*, nrems, member*
APPLY = """
local vals, idx, fence = KEYS[1], KEYS[2], KEYS[3]
local held = redis.call('HGET', fence, 'token')
if held ~= ARGV[1] then
  return {-1, held or ''}
end
local i = 2
local stale = {}
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local stored = redis.call('HGET', vals, ARGV[i])
  local version = '0'
  if stored then version = string.sub(stored, 1, string.find(stored, ':', 1, true) - 1) end
  if version ~= ARGV[i + 1] then
    stale[#stale + 1] = ARGV[i]
    stale[#stale + 1] = stored or ''
  end
  i = i + 2
end
local moved = {}
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local start, stop, limit = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local count = tonumber(ARGV[i + 3])
  i = i + 4
  local now = redis.call('ZRANGEBYLEX', idx, '[' .. start, '(' .. stop, 'LIMIT', 0, tonumber(limit))
  local same = #now == count
  if same then
    for j = 1, count do
      if now[j] ~= ARGV[i + j - 1] then
        same = false
        break
      end
    end
  end
  i = i + count
  if not same then
    moved[#moved + 1] = {start, stop, limit, now}
  end
end
if #stale > 0 or #moved > 0 then
  return {0, stale, moved}
end
local function each(command, key, width, pre)
  local count = tonumber(ARGV[i]); i = i + 1
  local chunk = {}
  for _ = 1, count do
    if pre then chunk[#chunk + 1] = pre end
    for w = 0, width - 1 do chunk[#chunk + 1] = ARGV[i + w] end
    i = i + width
    if #chunk >= 1000 then
      redis.call(command, key, unpack(chunk))
      chunk = {}
    end
  end
  if #chunk > 0 then redis.call(command, key, unpack(chunk)) end
  return count
end
local version = redis.call('HINCRBY', fence, 'version', 1)
local tag = string.format('%d', version) .. ':'
local sets = tonumber(ARGV[i]); i = i + 1
local chunk = {}
for _ = 1, sets do
  chunk[#chunk + 1] = ARGV[i]
  chunk[#chunk + 1] = tag .. ARGV[i + 1]
  i = i + 2
  if #chunk >= 1000 then
    redis.call('HSET', vals, unpack(chunk))
    chunk = {}
  end
end
if #chunk > 0 then redis.call('HSET', vals, unpack(chunk)) end
each('HDEL', vals, 1, nil)
each('ZADD', idx, 1, '0')
each('ZREM', idx, 1, nil)
redis.call('HSET', fence, 'at', redis.call('TIME')[1])
return {1, version}
"""
