-- Shared helpers, prepended to each script by redis_store.rs.
-- Amounts are integer micro-dollars. Lua numbers are doubles, exact up to
-- 2^53 micro-dollars (about $9 billion), far above any budget.
local function fmt(x)
  return string.format('%d', x)
end

-- Drop holds whose expiry (score, ms) is at or before now and return the
-- total still held. Members are "<reservation id>:<amount>".
local function live_held(ck, hk, now)
  local dead = redis.call('ZRANGEBYSCORE', hk, '-inf', now)
  if #dead > 0 then
    local freed = 0
    for _, m in ipairs(dead) do
      freed = freed + tonumber(string.match(m, ':(%d+)$'))
    end
    redis.call('ZREMRANGEBYSCORE', hk, '-inf', now)
    return tonumber(redis.call('HINCRBY', ck, 'held', fmt(-freed)))
  end
  return tonumber(redis.call('HGET', ck, 'held') or '0')
end

-- Committed spend of a line. Calendar counters keep one 'spent' field;
-- rolling counters keep one field per bucket index and drop buckets that
-- no longer overlap [now - window, now], so they stay bounded. Also
-- returns the oldest bucket that still holds spend (-1 if none).
local function committed(ck, kind, now, window_ms, bucket_ms)
  if kind == 'c' then
    return tonumber(redis.call('HGET', ck, 'spent') or '0'), -1
  end
  local first = math.floor((now - window_ms) / bucket_ms)
  local fields = redis.call('HGETALL', ck)
  local spent, oldest = 0, -1
  for j = 1, #fields, 2 do
    local f = fields[j]
    if f ~= 'held' then
      local b = tonumber(f)
      if b < first then
        redis.call('HDEL', ck, f)
      else
        local v = tonumber(fields[j + 1])
        spent = spent + v
        if v > 0 and (oldest == -1 or b < oldest) then
          oldest = b
        end
      end
    end
  end
  return spent, oldest
end
