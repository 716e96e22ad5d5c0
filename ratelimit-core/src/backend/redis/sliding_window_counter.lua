-- Sliding window counter: HASH { s = current bucket start, c = current, p = previous }.
-- Compared exactly in integers scaled by the window (the Rust side bounds limit x window).

local function params(i)
  return { limit = arg(i, 1), window = arg(i, 2) }
end

local function load(i, p, now)
  local v = redis.call('HMGET', KEYS[i], 's', 'c', 'p')
  if not v[1] then
    return nil
  end
  return { s = tonumber(v[1]), c = tonumber(v[2]), p = tonumber(v[3]) }
end

local function bucket_start(p, now)
  return now - (now % p.window)
end

-- previous, current as seen from the bucket holding `now`.
local function buckets_at(p, s, now)
  local start = bucket_start(p, now)
  if s == nil then
    return 0, 0
  elseif s.s == start then
    return s.p, s.c
  elseif s.s + p.window == start then
    return s.c, 0
  end
  return 0, 0
end

-- The smallest elapsed time in a bucket at which previous * (window - e) <= room * window.
local function first_fitting_elapsed(p, previous, room)
  if previous == 0 then
    return 0
  end
  return math.max(p.window - floor_div(room * p.window, previous), 0)
end

local function evaluate(p, s, now, cost)
  local start = bucket_start(p, now)
  local elapsed = now - start
  local previous, current = buckets_at(p, s, now)
  local scaled_limit = p.limit * p.window
  local scaled_cost = cost * p.window
  local before = previous * (p.window - elapsed) + current * p.window
  local allowed = before + scaled_cost <= scaled_limit
  local after = before
  if allowed then
    after = before + scaled_cost
  end
  local reset = start + p.window - now
  local retry = -1
  if not allowed and cost <= p.limit then
    local room = p.limit - current - cost
    if room >= 0 then
      retry = first_fitting_elapsed(p, previous, room) - elapsed
    else
      retry = reset + first_fitting_elapsed(p, current, p.limit - cost)
    end
  end
  return { allowed and 1 or 0, floor_div(math.max(scaled_limit - after, 0), p.window), reset, retry }
end

local function admit(i, p, s, now, cost)
  local start = bucket_start(p, now)
  local previous, current = buckets_at(p, s, now)
  redis.call('HSET', KEYS[i], 's', int(start), 'c', int(current + cost), 'p', int(previous))
  expire(KEYS[i], start + 2 * p.window, now)
end

local function first_rejection(i, p, now)
end
