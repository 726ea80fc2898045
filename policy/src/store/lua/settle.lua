-- Commit the actual cost on every line and release the hold, once.
-- KEYS: per line, counter hash then holds zset; last, the settle marker.
-- ARGV: now_ms, reservation id, reserved amount, actual, marker_ttl_ms, then
--       per line: kind, keep_ms, window_ms, bucket_ms.
-- Returns 1 when settled now, 0 when it had been settled before.
local now = tonumber(ARGV[1])
local member = ARGV[2] .. ':' .. ARGV[3]
local reserved = ARGV[3]
local actual = ARGV[4]
if not redis.call('SET', KEYS[#KEYS], '1', 'NX', 'PX', ARGV[5]) then
  return 0
end
local n = (#KEYS - 1) / 2
for i = 1, n do
  local ck, hk = KEYS[2 * i - 1], KEYS[2 * i]
  local a = 5 + (i - 1) * 4
  -- A hold that already expired was released by whoever purged it.
  if redis.call('ZREM', hk, member) == 1 then
    redis.call('HINCRBY', ck, 'held', '-' .. reserved)
  end
  if ARGV[a + 1] == 'c' then
    redis.call('HINCRBY', ck, 'spent', actual)
  else
    local bucket = math.floor(now / tonumber(ARGV[a + 4]))
    redis.call('HINCRBY', ck, fmt(bucket), actual)
  end
  redis.call('PEXPIRE', ck, ARGV[a + 2])
  redis.call('PEXPIRE', hk, ARGV[a + 2])
end
return 1
