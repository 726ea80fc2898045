-- Shared helpers, prepended to each script by redis_store.rs.
-- Amounts are integer micro-dollars. Lua numbers are doubles, exact up to
-- 2^53 micro-dollars (about $9 billion), far above any budget.
local function fmt(x)
  return string.format('%d', x)
end

-- Committed spend, live holds and the oldest rolling bucket with spend (-1
-- if none) of one line, after dropping what no longer counts:
-- * holds whose expiry (score, ms) is at or before now; members are
--   "<reservation id>:<amount>" and their amounts leave 'held';
-- * rolling buckets that no longer overlap [now - window, now], so a
--   rolling counter stays bounded (calendar counters keep one 'spent').
local function tally(ck, hk, kind, now, window_ms, bucket_ms)
  local dead = redis.call('ZRANGEBYSCORE', hk, '-inf', now)
  if #dead > 0 then
    local freed = 0
    for _, m in ipairs(dead) do
      freed = freed + tonumber(string.match(m, ':(%d+)$'))
    end
    redis.call('ZREMRANGEBYSCORE', hk, '-inf', now)
    redis.call('HINCRBY', ck, 'held', fmt(-freed))
  end
  if kind == 'c' then
    local v = redis.call('HMGET', ck, 'spent', 'held')
    return tonumber(v[1] or '0'), tonumber(v[2] or '0'), -1
  end
  local first = math.floor((now - window_ms) / bucket_ms)
  local fields = redis.call('HGETALL', ck)
  local spent, held, oldest = 0, 0, -1
  for j = 1, #fields, 2 do
    local f = fields[j]
    if f == 'held' then
      held = tonumber(fields[j + 1])
    else
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
  return spent, held, oldest
end
