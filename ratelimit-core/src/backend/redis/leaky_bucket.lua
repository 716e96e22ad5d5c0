-- Leaky bucket (meter): '<dd' = level in scaled units, last update. Parameters: capacity,
-- amount, per_ms, window. The level drains `amount` units per ms.

local function leaky_bucket(k, a, now, cost)
  local capacity, amount, unit = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local scaled_capacity = capacity * unit
  local level, last = 0, now
  local stored = redis.call('GET', KEYS[k])
  if stored then
    local stored_level, updated = unpack('<dd', stored)
    level = stored_level - min(max(now - updated, 0) * amount, stored_level)
    last = max(updated, now)
  end
  local added = cost * unit
  if level + added <= scaled_capacity then
    local after = level + added
    local reset = millis_for(amount, after) or 0
    local remaining = floor_div(scaled_capacity - after, unit)
    return 1, remaining, reset, -1, pack('<dd', after, last), max(reset, 1)
  end
  local retry = -1
  if cost <= capacity then
    retry = millis_for(amount, level + added - scaled_capacity) or -1
  end
  local remaining = floor_div(max(scaled_capacity - level, 0), unit)
  return 0, remaining, millis_for(amount, level) or 0, retry
end
