-- Commit the actual cost on every line and release the hold, once.
-- KEYS: per line, counter hash then holds zset; last, the late-settle marker.
-- ARGV: now_ms, reservation id, reserved amount, actual, marker_from_ms,
--       marker_ttl_ms, then per line: kind, keep_ms, bucket_ms.
-- Returns 1 when settled now, 0 when it had been settled before.
--
-- Well before the hold expires, the hold itself proves the reservation is
-- still unsettled: no hold means settled already. From marker_from_ms (a
-- margin before expiry, since another gateway's clock may run a little
-- ahead and purge the hold early) and after expiry, the hold may be gone,
-- so such a settle leaves a marker and a repeat finds it.
local now = tonumber(ARGV[1])
local member = ARGV[2] .. ':' .. ARGV[3]
local reserved = ARGV[3]
local actual = ARGV[4]
local n = (#KEYS - 1) / 2

local late = now >= tonumber(ARGV[5])
local first = 1
if late then
  if not redis.call('SET', KEYS[#KEYS], '1', 'NX', 'PX', ARGV[6]) then
    return 0
  end
else
  if redis.call('ZREM', KEYS[2], member) == 0 then
    return 0
  end
  redis.call('HINCRBY', KEYS[1], 'held', fmt(-tonumber(reserved)))
  first = 2
end
for i = first, n do
  if redis.call('ZREM', KEYS[2 * i], member) == 1 then
    redis.call('HINCRBY', KEYS[2 * i - 1], 'held', fmt(-tonumber(reserved)))
  end
end

for i = 1, n do
  local ck = KEYS[2 * i - 1]
  local a = 6 + (i - 1) * 3
  local rolling = ARGV[a + 1] == 'r'
  if rolling then
    add_capped(ck, fmt(math.floor(now / tonumber(ARGV[a + 3]))), actual)
  else
    add_capped(ck, 'spent', actual)
  end
  -- Both keys of a line always share one expiry instant. A live hold means
  -- a calendar line's keys exist with theirs already; rolling lines move
  -- theirs forward with every use, and a late settle may have recreated
  -- the counter.
  if rolling or late then
    redis.call('PEXPIRE', ck, ARGV[a + 2])
    redis.call('PEXPIRE', KEYS[2 * i], ARGV[a + 2])
  end
end
return 1
