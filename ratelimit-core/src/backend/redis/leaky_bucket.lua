-- Leaky bucket (meter): '<dd' = level in scaled units, last update. Parameters: capacity,
-- amount, per_ms, window. The level drains `amount` units per ms.

local function leaky_bucket(k, args, at, now, cost)
  local capacity, amount, unit = unpack('<ddd', args, at)
  local scaled_capacity = capacity * unit
  local level, last = 0, now
  local stored = load(KEYS[k], 16)
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
