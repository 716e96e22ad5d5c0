-- The loop over the batch. Each check evaluates every quota, then records in all of them only
-- if all allow (a rejected request is never counted). Returns 4 integers per quota of each
-- check: allowed (1/0), remaining, reset_after_ms, retry_after_ms (-1: never).
--
-- KEYS[1] is the call's marker, unique to the call. A client that lost its connection before
-- the reply cannot tell whether the call ran, so it may send the very same call again: the
-- marker holds the reply of the first run (for ARGV[2] ms), and a call that finds it returns
-- that reply and counts nothing twice.

local marker = KEYS[1]
local done = redis.call('GET', marker)
if done then
  return cmsgpack.unpack(done)
end

-- `evaluate` is this script's algorithm function, bound just before this file.
-- Bytes of parameters per quota (8 per number), and keys per quota, by algorithm code.
local param_bytes = { 16, 16, 16, 40, 32 }
local keys_per_quota = { 1, 2, 1, 1, 1 }
local SLIDING_WINDOW = 2
local HEADER_BYTES = 32

local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + floor(tonumber(time[2]) / 1000)
end

local reply = {}
-- Per quota of the current check: value and TTL if admitted, then if not. Reused.
local pending = {}
local k = 2
for c = 3, #ARGV do
  local args = ARGV[c]
  local code, cost, record, quotas = unpack('<dddd', args)
  local params, keys = param_bytes[code], keys_per_quota[code]
  local all_allowed, failed = true, false
  for q = 0, quotas - 1 do
    local ok, allowed, remaining, reset, retry, value, ttl, first_value, first_ttl =
      pcall(evaluate, k + q * keys, args, 1 + HEADER_BYTES + q * params, now, cost)
    if not ok then
      -- A key holding something else fails this check alone: remaining -1 is a reply the
      -- Rust side rejects, and nothing is written. The other checks of the batch go on.
      allowed, remaining, reset, retry, value, ttl, first_value, first_ttl = 0, -1, 0, -1
      failed = true
    end
    local n = #reply
    reply[n + 1], reply[n + 2], reply[n + 3], reply[n + 4] = allowed, remaining, reset, retry
    if allowed == 0 then
      all_allowed = false
    end
    local p = 4 * q
    pending[p + 1], pending[p + 2], pending[p + 3], pending[p + 4] = value, ttl, first_value, first_ttl
  end
  if record == 1 and not failed then
    for q = 0, quotas - 1 do
      local p, key = 4 * q, k + q * keys
      if all_allowed and code == SLIDING_WINDOW then
        log_admit(key, args, 1 + HEADER_BYTES + q * params, now, cost)
      elseif all_allowed then
        store(KEYS[key], pending[p + 1], pending[p + 2])
      elseif pending[p + 3] then
        store(KEYS[key], pending[p + 3], pending[p + 4])
      end
    end
  end
  k = k + quotas * keys
end

for key, ttl in pairs(ttls) do
  redis.call('SET', key, values[key], 'PX', ttl)
end
redis.call('SET', marker, cmsgpack.pack(reply), 'PX', ARGV[2])
return reply
