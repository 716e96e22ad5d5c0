-- Sliding window counter: '<ddd' = current bucket start, current, previous. Parameters: limit,
-- window. Compared exactly in integers scaled by the window (the Rust side bounds
-- limit x window).

-- The smallest elapsed time in a bucket at which previous * (window - e) <= room * window.
local function first_fitting_elapsed(window, previous, room)
  if previous == 0 then
    return 0
  end
  return max(window - floor_div(room * window, previous), 0)
end

local function sliding_window_counter(k, args, at, now, cost)
  local limit, window = unpack('<dd', args, at)
  local start = now - (now % window)
  local elapsed = now - start
  local previous, current = 0, 0
  local stored = load(KEYS[k], 24)
  if stored then
    local stored_start, stored_current, stored_previous = unpack('<ddd', stored)
    if stored_start == start then
      previous, current = stored_previous, stored_current
    elseif stored_start + window == start then
      previous = stored_current
    end
  end
  local scaled_limit = limit * window
  local before = previous * (window - elapsed) + current * window
  local after = before + cost * window
  local reset = start + window - now
  if after <= scaled_limit then
    local remaining = floor_div(scaled_limit - after, window)
    return 1, remaining, reset, -1, pack('<ddd', start, current + cost, previous), start + 2 * window - now
  end
  local retry = -1
  if cost <= limit then
    local room = limit - current - cost
    if room >= 0 then
      retry = first_fitting_elapsed(window, previous, room) - elapsed
    else
      retry = reset + first_fitting_elapsed(window, current, limit - cost)
    end
  end
  return 0, floor_div(max(scaled_limit - before, 0), window), reset, retry
end
