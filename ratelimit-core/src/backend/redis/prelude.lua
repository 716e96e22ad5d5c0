-- The rate-limit script evaluates a batch of checks, in order, in one call. `scripts.rs` joins
-- this prelude, one file per algorithm and `checks.lua` (the loop over the batch) into one script,
-- so checks of every algorithm can share a call.
--
-- ARGV[1] = now in ms, or '' to use the server clock (TIME, read once per batch);
-- ARGV[2] = number of checks; then per check: algorithm code (1 fixed window, 2 sliding log,
-- 3 sliding window counter, 4 token bucket, 5 leaky bucket), cost, '1' to record or '0' to
-- peek, number of quotas, then each quota's parameters. KEYS: per check, per quota, the state
-- key (the sliding log: its log key, then its sequence key).
--
-- Every number is an integer below 2^53 (the Rust side validates that), so Lua's doubles are
-- exact. States other than the sliding log are one string value per quota, packed doubles
-- (`struct.pack('<dd', ..)`): one GET, one SET with PX, no number formatting.
--
-- An algorithm function `f(k, a, now, cost)` reads the quota whose key is KEYS[k] and whose
-- parameters start at ARGV[a], and returns allowed (1/0), remaining, reset_after_ms,
-- retry_after_ms (-1: never), then the value and TTL to write if the whole check is admitted,
-- then the value and TTL to write if it is not (nil: write nothing). It writes nothing itself.

local pack, unpack = struct.pack, struct.unpack
local min, max, floor = math.min, math.max, math.floor

-- floor(a / b) for non-negative integers, corrected for the rounding of the division.
local function floor_div(a, b)
  local q = floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

local function ceil_div(a, b)
  local q = floor_div(a, b)
  if q * b < a then
    q = q + 1
  end
  return q
end

-- Milliseconds until `units` have flowed at `amount` units per ms, or nil when nothing flows.
local function millis_for(amount, units)
  if units == 0 then
    return 0
  elseif amount == 0 then
    return nil
  end
  return ceil_div(units, amount)
end

-- An integer as a string without exponent (tostring would use one above 1e14).
local function int(x)
  return string.format('%.0f', x)
end
