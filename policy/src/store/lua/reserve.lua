-- Reserve the largest amount in [min, max] that every line can pay, on all
-- lines or none.
-- KEYS: per line, counter hash then holds zset.
-- ARGV: now_ms, hold_expiry_ms, min, max, reservation id, then per line:
--       limit, kind ('c' calendar | 'r' rolling), keep_ms, window_ms,
--       bucket_ms.
-- Returns {1, amount} or {0, failing line (0-based), available, oldest bucket}.
local now = tonumber(ARGV[1])
local amin = tonumber(ARGV[3])
local amount = tonumber(ARGV[4])
local n = #KEYS / 2
local fresh = {}

for i = 1, n do
  local ck, hk = KEYS[2 * i - 1], KEYS[2 * i]
  local a = 5 + (i - 1) * 5
  local spent, held, oldest = tally(ck, hk, ARGV[a + 2], now, tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]))
  local available = tonumber(ARGV[a + 1]) - spent - held
  -- No live hold means the holds set may not exist yet (and with no spend
  -- either, the counter too): those get their lifetime set below.
  fresh[i] = held == 0
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

local member = ARGV[5] .. ':' .. fmt(amount)
for i = 1, n do
  local ck, hk = KEYS[2 * i - 1], KEYS[2 * i]
  -- A repeated id with the same amount is the same hold: count it once,
  -- or 'held' would keep an amount no hold member can ever release.
  if redis.call('ZADD', hk, 'NX', ARGV[2], member) == 1 then
    redis.call('HINCRBY', ck, 'held', fmt(amount))
  end
  -- Rolling counters live on after their last use, so their lifetime moves
  -- with every reservation; calendar ones end at a fixed instant.
  if fresh[i] or ARGV[5 + (i - 1) * 5 + 2] == 'r' then
    local keep = ARGV[5 + (i - 1) * 5 + 3]
    redis.call('PEXPIRE', ck, keep)
    redis.call('PEXPIRE', hk, keep)
  end
end
return {1, amount}
