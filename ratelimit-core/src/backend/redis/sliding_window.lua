-- Sliding log: ZSET of admitted requests (score = time, member = '<seq>:<cost>') and a
-- sequence counter that keeps members unique. Parameters: limit, window. KEYS[k] is the log,
-- KEYS[k + 1] the counter. Its admission is `log_admit` (several commands at once, not a
-- `store`).

local function sliding_window(k, args, at, now, cost)
  local limit, window = unpack('<dd', args, at)
  -- The requests still counted at `now` (admitted at t with t + window > now), oldest first.
  local raw = redis.call('ZRANGEBYSCORE', KEYS[k], '(' .. int(now - window), '+inf', 'WITHSCORES')
  local used = 0
  for j = 1, #raw, 2 do
    used = used + tonumber(string.match(raw[j], ':(%d+)$'))
  end
  local oldest = tonumber(raw[2])
  if used + cost <= limit then
    if oldest == nil or now < oldest then
      oldest = now
    end
    return 1, limit - used - cost, oldest + window - now, -1, true, 0
  end
  local retry = -1
  if cost <= limit then
    local must_free = used + cost - limit
    local freed = 0
    retry = 1
    for j = 1, #raw, 2 do
      freed = freed + tonumber(string.match(raw[j], ':(%d+)$'))
      if freed >= must_free then
        retry = max(tonumber(raw[j + 1]) + window - now, 1)
        break
      end
    end
  end
  local reset = 0
  if oldest ~= nil then
    reset = oldest + window - now
  end
  return 0, max(limit - used, 0), reset, retry
end

local function log_admit(k, args, at, now, cost)
  local _, window = unpack('<dd', args, at)
  redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', int(now - window))
  local seq = redis.call('INCR', KEYS[k + 1])
  redis.call('ZADD', KEYS[k], int(now), seq .. ':' .. int(cost))
  local newest = tonumber(redis.call('ZRANGE', KEYS[k], -1, -1, 'WITHSCORES')[2])
  local ttl = int(max(newest + window - now, 1))
  redis.call('PEXPIRE', KEYS[k], ttl)
  redis.call('PEXPIRE', KEYS[k + 1], ttl)
end
