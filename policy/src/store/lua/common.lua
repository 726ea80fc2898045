-- Shared helpers, prepended to each script by redis_store.rs.
-- Amounts are integer micro-dollars. Lua numbers are doubles, exact up to
-- 2^53 micro-dollars (about $9 billion), far above any budget.
local function fmt(x)
  return string.format('%d', x)
end

-- The largest double below 2^63: counters report at most this, so Redis'
-- conversion of a Lua number to an integer reply cannot overflow.
local MAX_REPLY = 9223372036854774784

-- Add a non-negative amount to an integer hash field, stopping at the
-- largest 64-bit integer. A plain HINCRBY would fail on overflow half-way
-- through a script, after earlier writes (released holds) had already
-- happened; caught here, the field is set to the cap instead (also when it
-- holds something that is not an integer, which can only count more).
local function add_capped(key, field, amount)
  local r = redis.pcall('HINCRBY', key, field, amount)
  if type(r) == 'table' and r.err then
    redis.call('HSET', key, field, '9223372036854775807')
  end
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
