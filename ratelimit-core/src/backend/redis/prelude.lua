-- A rate-limit script evaluates a batch of checks of one algorithm, in order, in one call.
-- `scripts.rs` joins this prelude, the algorithm's file and `checks.lua` (the loop over the
-- batch) into that algorithm's script, one script per algorithm.
--
-- ARGV[1] = now in ms, or '' to use the server clock (TIME, read once per batch); ARGV[2] =
-- how long the call's marker lasts, in ms; then one argument per check, its numbers packed as
-- little-endian doubles: algorithm code (1 fixed window, 2 sliding log, 3 sliding window
-- counter, 4 token bucket, 5 leaky bucket), cost, 1 to record or 0 to peek, number of quotas,
-- then each quota's parameters. KEYS[1] = the call's marker (see `checks.lua`); then per
-- check, per quota, the state key (the sliding log: its log key, then its sequence key).
--
-- Every number is an integer below 2^53 (the Rust side validates that), so doubles carry it
-- exactly, in arguments, in Lua and in stored state. Packing spares the server parsing
-- decimal numbers, and a check is one argument however many parameters it has.
--
-- States other than the sliding log are one string value per quota, packed doubles too
-- (`struct.pack('<dd', ..)`), read with GET and written with `SET … PX`. A key is read at most
-- once and written at most once per batch: checks on a key already seen in this batch use the
-- value the one before them left (`load` / `store`), so a hot key costs the server two
-- commands per batch, not per check.
--
-- An algorithm function `f(k, args, at, now, cost)` reads the quota whose key is KEYS[k] and
-- whose parameters start at byte `at` of `args`, and returns allowed (1/0), remaining,
-- reset_after_ms, retry_after_ms (-1: never), then the value and TTL to store if the whole
-- check is admitted, then the value and TTL to store if it is not (nil: store nothing). It
-- stores nothing itself.

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

-- This batch's view of string states: key -> value (false: absent), and key -> TTL for the
-- keys to write when the batch ends.
local values, ttls = {}, {}

-- The state at `key` (a string of `bytes` bytes), or false when there is none. Raises an error
-- when the key holds something else (written by another program): `checks.lua` then fails
-- that check alone.
local function load(key, bytes)
  local value = values[key]
  if value == nil then
    value = redis.call('GET', key)
    values[key] = value
  end
  if value and #value ~= bytes then
    error('not a rate-limit state: ' .. key)
  end
  return value
end

local function store(key, value, ttl)
  values[key] = value
  ttls[key] = ttl
end

-- An integer as a string without exponent (tostring would use one above 1e14).
local function int(x)
  return string.format('%.0f', x)
end
