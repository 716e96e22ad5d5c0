-- Token bucket: '<dd' = tokens in scaled units (one token = per_ms units), last update.
-- Parameters: bucket size, amount, per_ms, initial tokens, window. The refill adds `amount`
-- units per ms, so every level is an exact integer.

local function token_bucket(k, args, at, now, cost)
  local size, amount, unit, initial_tokens, window = unpack('<ddddd', args, at)
  local capacity = size * unit
  local initial = min(initial_tokens, size) * unit
  local tokens, last = initial, now
  local stored = load(KEYS[k], 16)
  if stored then
    local level, updated = unpack('<dd', stored)
    local flowed = min(max(now - updated, 0) * amount, capacity)
    tokens = min(min(level, capacity) + flowed, capacity)
    last = max(updated, now)
  end
  -- A bucket full again means the same as a new one only when new buckets start full; one that
  -- starts lower is kept a window longer.
  local grace = 0
  if initial_tokens < size then
    grace = window
  end
  local needed = cost * unit
  if tokens >= needed then
    local after = tokens - needed
    local reset = millis_for(amount, capacity - after) or 0
    return 1, floor_div(after, unit), reset, -1, pack('<dd', after, last), max(reset + grace, 1)
  end
  local retry = -1
  if cost <= size then
    retry = millis_for(amount, needed - tokens) or -1
  end
  local reset = millis_for(amount, capacity - tokens) or 0
  -- The refill clock starts at the first request even when it does not fit.
  local first_value, first_ttl
  if not stored and grace > 0 then
    first_value = pack('<dd', initial, now)
    first_ttl = max((millis_for(amount, capacity - initial) or 0) + grace, 1)
  end
  return 0, floor_div(tokens, unit), reset, retry, nil, nil, first_value, first_ttl
end
