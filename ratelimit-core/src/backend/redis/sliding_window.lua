-- Sliding log: ZSET of admitted requests (score = time, member = '<seq>:<cost>') and a
-- sequence counter that keeps members unique.

local function params(i)
  return { limit = arg(i, 1), window = arg(i, 2) }
end

local function log_key(i)
  return KEYS[2 * i - 1]
end

local function seq_key(i)
  return KEYS[2 * i]
end

-- The requests still counted at `now` (admitted at t with t + window > now), oldest first.
local function load(i, p, now)

  local raw = redis.call('ZRANGEBYSCORE', log_key(i), '(' .. int(now - p.window), '+inf', 'WITHSCORES')
  if #raw == 0 then
    return nil
  end
  local entries = {}
  for j = 1, #raw, 2 do
    local cost = tonumber(string.match(raw[j], ':(%d+)$'))
    entries[#entries + 1] = { at = tonumber(raw[j + 1]), cost = cost }
  end
  return entries
end

local function evaluate(p, s, now, cost)
  local entries = s or {}
  local used = 0
  for _, entry in ipairs(entries) do
    used = used + entry.cost
  end
  local allowed = used + cost <= p.limit
  local oldest = entries[1] and entries[1].at or nil
  local after = used
  if allowed then
    after = used + cost
    if oldest == nil or now < oldest then
      oldest = now
    end
  end
  local retry = -1
  if not allowed and cost <= p.limit then
    local must_free = used + cost - p.limit
    local freed = 0
    retry = 1
    for _, entry in ipairs(entries) do
      freed = freed + entry.cost
      if freed >= must_free then
        retry = math.max(entry.at + p.window - now, 1)
        break
      end
    end
  end
  local reset = 0
  if oldest ~= nil then
    reset = oldest + p.window - now
  end
  return { allowed and 1 or 0, math.max(p.limit - after, 0), reset, retry }
end

local function admit(i, p, s, now, cost)
  redis.call('ZREMRANGEBYSCORE', log_key(i), '-inf', int(now - p.window))
  local seq = redis.call('INCR', seq_key(i))
  redis.call('ZADD', log_key(i), int(now), seq .. ':' .. int(cost))
  local newest = tonumber(redis.call('ZRANGE', log_key(i), -1, -1, 'WITHSCORES')[2])
  expire(log_key(i), newest + p.window, now)
  expire(seq_key(i), newest + p.window, now)
end

local function first_rejection(i, p, now)
end
