-- Token bucket: HASH { l = tokens in scaled units (one token = per_ms units), t = last update }.
-- The refill adds `amount` units per ms, so every level is an exact integer.

local function params(i)
  local size, amount, per_ms = arg(i, 1), arg(i, 2), arg(i, 3)
  return {
    size = size,
    amount = amount,
    unit = per_ms,
    capacity = size * per_ms,
    initial = math.min(arg(i, 4), size) * per_ms,
    initial_below_size = arg(i, 4) < size,
    window = arg(i, 5),
  }
end

local function load(i, p, now)
  local v = redis.call('HMGET', KEYS[i], 'l', 't')
  if not v[1] then
    return nil
  end
  return { l = tonumber(v[1]), t = tonumber(v[2]) }
end

local function tokens_at(p, s, now)
  if s == nil then
    return p.initial
  end
  local level = math.min(s.l, p.capacity)
  local flowed = math.min(math.max(now - s.t, 0) * p.amount, p.capacity)
  return math.min(level + flowed, p.capacity)
end

-- Milliseconds until `units` have flowed, or nil when nothing flows.
local function millis_for(p, units)
  if units == 0 then
    return 0
  elseif p.amount == 0 then
    return nil
  end
  return ceil_div(units, p.amount)
end

local function evaluate(p, s, now, cost)
  local tokens = tokens_at(p, s, now)
  local needed = cost * p.unit
  local allowed = tokens >= needed
  local after = tokens
  if allowed then
    after = tokens - needed
  end
  local retry = -1
  if not allowed and cost <= p.size then
    retry = millis_for(p, needed - tokens) or -1
  end
  return { allowed and 1 or 0, floor_div(after, p.unit), millis_for(p, p.capacity - after) or 0, retry }
end

-- A bucket full again means the same as a new one only when new buckets start full; one that
-- starts lower is kept a window longer.
local function store(i, p, level, last, now)
  redis.call('HSET', KEYS[i], 'l', int(level), 't', int(last))
  local grace = 0
  if p.initial_below_size then
    grace = p.window
  end
  expire(KEYS[i], now + (millis_for(p, p.capacity - level) or 0) + grace, now)
end

local function admit(i, p, s, now, cost)
  local last = now
  if s ~= nil then
    last = math.max(s.t, now)
  end
  store(i, p, tokens_at(p, s, now) - cost * p.unit, last, now)
end

-- The refill clock starts at the first request even when it does not fit.
local function first_rejection(i, p, now)
  if p.initial_below_size then
    store(i, p, p.initial, now, now)
  end
end
