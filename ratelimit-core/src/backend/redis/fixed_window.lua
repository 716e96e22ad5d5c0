-- Fixed window: HASH { w = window start, c = count }.

local function params(i)
  return { limit = arg(i, 1), window = arg(i, 2) }
end

local function load(i, p, now)
  local v = redis.call('HMGET', KEYS[i], 'w', 'c')
  if not v[1] then
    return nil
  end
  return { w = tonumber(v[1]), c = tonumber(v[2]) }
end

local function window_start(p, now)
  return now - (now % p.window)
end

local function used(p, s, now)
  if s ~= nil and s.w == window_start(p, now) then
    return s.c
  end
  return 0
end

local function evaluate(p, s, now, cost)
  local before = used(p, s, now)
  local reset = window_start(p, now) + p.window - now
  local allowed = before + cost <= p.limit
  local after = before
  if allowed then
    after = before + cost
  end
  local retry = -1
  if not allowed and cost <= p.limit then
    retry = reset
  end
  return { allowed and 1 or 0, math.max(p.limit - after, 0), reset, retry }
end

local function admit(i, p, s, now, cost)
  local start = window_start(p, now)
  redis.call('HSET', KEYS[i], 'w', int(start), 'c', int(used(p, s, now) + cost))
  expire(KEYS[i], start + p.window, now)
end

local function first_rejection(i, p, now)
end
