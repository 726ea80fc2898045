-- Reserve the largest amount in [min, max] that every line can pay, on all
-- lines or none.
-- KEYS: per line, counter hash then holds zset.
-- ARGV: now_ms, hold_expiry_ms, min, max, reservation id, then per line:
--       limit, kind ('c' calendar | 'r' rolling), keep_ms,
--       window_ms, bucket_ms.
-- Returns {1, amount} or {0, failing line (0-based), available, oldest bucket}.
local now = tonumber(ARGV[1])
local exp = tonumber(ARGV[2])
local amin = tonumber(ARGV[3])
local amount = tonumber(ARGV[4])
local id = ARGV[5]
local n = #KEYS / 2

for i = 1, n do
  local ck, hk = KEYS[2 * i - 1], KEYS[2 * i]
  local a = 5 + (i - 1) * 5
  local limit = tonumber(ARGV[a + 1])
  local spent, oldest = committed(ck, ARGV[a + 2], now, tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]))
  local available = limit - spent - live_held(ck, hk, now)
  if available < amount then
    amount = available
  end
  if amount < amin then
    if available < 0 then
      available = 0
    end
    return {0, i - 1, available, oldest}
  end
end

local member = id .. ':' .. fmt(amount)
for i = 1, n do
  local ck, hk = KEYS[2 * i - 1], KEYS[2 * i]
  local keep_ms = ARGV[5 + (i - 1) * 5 + 3]
  redis.call('HINCRBY', ck, 'held', fmt(amount))
  redis.call('ZADD', hk, exp, member)
  redis.call('PEXPIRE', ck, keep_ms)
  redis.call('PEXPIRE', hk, keep_ms)
end
return {1, amount}
