-- The loop over the batch. Each check evaluates every quota, then records in all of them only
-- if all allow (a rejected request is never counted). Returns 4 integers per quota of each
-- check: allowed (1/0), remaining, reset_after_ms, retry_after_ms (-1: never).

local evaluators = { fixed_window, sliding_window, sliding_window_counter, token_bucket, leaky_bucket }
local params_per_quota = { 2, 2, 2, 5, 4 }
local keys_per_quota = { 1, 2, 1, 1, 1 }
local SLIDING_WINDOW = 2

local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + floor(tonumber(time[2]) / 1000)
end

local function write(code, k, a, now, cost, value, ttl)
  if code == SLIDING_WINDOW then
    log_admit(k, a, now, cost)
  else
    redis.call('SET', KEYS[k], value, 'PX', ttl)
  end
end

local reply = {}
-- Per quota of the current check: value and TTL if admitted, then if not. Reused.
local writes = {}
local a, k = 3, 1
for _ = 1, tonumber(ARGV[2]) do
  local code, cost = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local record, quotas = ARGV[a + 2] == '1', tonumber(ARGV[a + 3])
  local evaluate = evaluators[code]
  local params, keys = params_per_quota[code], keys_per_quota[code]
  a = a + 4
  local all_allowed = true
  for q = 0, quotas - 1 do
    local allowed, remaining, reset, retry, value, ttl, first_value, first_ttl =
      evaluate(k + q * keys, a + q * params, now, cost)
    local n = #reply
    reply[n + 1], reply[n + 2], reply[n + 3], reply[n + 4] = allowed, remaining, reset, retry
    if allowed == 0 then
      all_allowed = false
    end
    local w = 4 * q
    writes[w + 1], writes[w + 2], writes[w + 3], writes[w + 4] = value, ttl, first_value, first_ttl
  end
  if record then
    for q = 0, quotas - 1 do
      local w = 4 * q
      if all_allowed then
        write(code, k + q * keys, a + q * params, now, cost, writes[w + 1], writes[w + 2])
      elseif writes[w + 3] then
        redis.call('SET', KEYS[k + q * keys], writes[w + 3], 'PX', writes[w + 4])
      end
    end
  end
  a = a + quotas * params
  k = k + quotas * keys
end
return reply
