-- Committed spend and live holds of each line.
-- KEYS: per line, counter hash then holds zset.
-- ARGV: now_ms, then per line: kind, window_ms, bucket_ms.
-- Returns {spent1, held1, spent2, held2, ...}.
local now = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS / 2 do
  local a = 1 + (i - 1) * 3
  local spent, held = tally(KEYS[2 * i - 1], KEYS[2 * i], ARGV[a + 1], now, tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]))
  out[#out + 1] = math.min(spent, MAX_REPLY)
  out[#out + 1] = math.min(held, MAX_REPLY)
end
return out
