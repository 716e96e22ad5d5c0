-- Shared prelude of every rate-limit script. The Rust side puts `local PARAMS = <arguments per
-- quota>` before it. The algorithm part defines `params(i)`, `load(i, p, now)`,
-- `evaluate(p, s, now, cost)`, `admit(i, p, s, now, cost)` and `first_rejection(i, p, now)`;
-- `tail.lua` runs them.
--
-- ARGV[1] = now in ms, or '' to use the server clock (TIME); ARGV[2] = cost;
-- ARGV[3] = '1' to record, '0' to peek; ARGV[4] = number of quotas; then PARAMS per quota.
-- Every number is an integer below 2^53 (the Rust side validates that), so Lua's doubles are
-- exact; numbers are written back with '%.0f' because tostring would use exponents.

local function now_ms()
  if ARGV[1] ~= '' then
    return tonumber(ARGV[1])
  end
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

local function int(x)
  return string.format('%.0f', x)
end

-- floor(a / b) for non-negative integers, corrected for the rounding of the division.
local function floor_div(a, b)
  local q = math.floor(a / b)
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

-- Expires `key` at `at` (ms on the rate limiter's clock), at least 1 ms from now. Relative
-- TTLs keep an injected test clock and the server clock apart.
local function expire(key, at, now)
  redis.call('PEXPIRE', key, int(math.max(at - now, 1)))
end

local function arg(i, j)
  return tonumber(ARGV[4 + (i - 1) * PARAMS + j])
end
