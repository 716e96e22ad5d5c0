-- Leaky bucket (meter): HASH { l = level in scaled units, t = last update }. The level drains
-- `amount` units per ms.

local function params(i)
  local capacity, amount, per_ms = arg(i, 1), arg(i, 2), arg(i, 3)
  return {
    capacity = capacity,
    amount = amount,
    unit = per_ms,
    scaled_capacity = capacity * per_ms,
    window = arg(i, 4),
  }
end

local function load(i, p, now)
  local v = redis.call('HMGET', KEYS[i], 'l', 't')
  if not v[1] then
    return nil
  end
  return { l = tonumber(v[1]), t = tonumber(v[2]) }
end

local function level_at(p, s, now)
  if s == nil then
    return 0
  end
  return s.l - math.min(math.max(now - s.t, 0) * p.amount, s.l)
end

local function millis_for(p, units)
  if units == 0 then
    return 0
  elseif p.amount == 0 then
    return nil
  end
  return ceil_div(units, p.amount)
end

local function evaluate(p, s, now, cost)
  local level = level_at(p, s, now)
  local added = cost * p.unit
  local allowed = level + added <= p.scaled_capacity
  local after = level
  if allowed then
    after = level + added
  end
  local retry = -1
  if not allowed and cost <= p.capacity then
    retry = millis_for(p, level + added - p.scaled_capacity) or -1
  end
  local remaining = floor_div(math.max(p.scaled_capacity - after, 0), p.unit)
  return { allowed and 1 or 0, remaining, millis_for(p, after) or 0, retry }
end

local function admit(i, p, s, now, cost)
  local level = level_at(p, s, now) + cost * p.unit
  local last = now
  if s ~= nil then
    last = math.max(s.t, now)
  end
  redis.call('HSET', KEYS[i], 'l', int(level), 't', int(last))
  expire(KEYS[i], now + (millis_for(p, level) or 0), now)
end

local function first_rejection(i, p, now)
end
