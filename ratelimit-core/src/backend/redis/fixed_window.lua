-- Fixed window: '<dd' = window start, count. Parameters: limit, window.

local function fixed_window(k, args, at, now, cost)
  local limit, window = unpack('<dd', args, at)
  local start = now - (now % window)
  local used = 0
  local stored = load(KEYS[k], 16)
  if stored then
    local stored_start, count = unpack('<dd', stored)
    if stored_start == start then
      used = count
    end
  end
  local reset = start + window - now
  if used + cost <= limit then
    return 1, limit - used - cost, reset, -1, pack('<dd', start, used + cost), reset
  end
  local retry = -1
  if cost <= limit then
    retry = reset
  end
  return 0, max(limit - used, 0), reset, retry
end
