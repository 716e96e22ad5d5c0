-- Sliding log: ZSET of admitted requests (score = time, member = '<seq>:<cost>') and, beside
-- it, a string '<seq>:<total>': the last sequence number (it keeps members unique) and the sum
-- of the costs the ZSET holds. Parameters: limit, window. KEYS[k] is the log, KEYS[k + 1] the
-- sequence key. Its admission is `log_admit` (several commands at once, not a `store`).
--
-- A check never reads the whole log: it drops the expired entries by score range (each entry
-- once: O(log n + expired)), after which every entry left is counted and `used` is the total.
-- Only a rejection reads further, up to the entries that must slide out for its cost.
--
-- A sequence key holding a bare number (written before totals were kept) or missing beside a
-- log has its total rebuilt once from the log, and its sequence number from the members.

local function log_cost(member)
  return tonumber(string.match(member, ':(%d+)$'))
end

-- The log's sequence number and total at `now`, after dropping the entries that no longer
-- count (admitted at t with t + window <= now). Writes the sequence key back when that changed
-- it, with the log's TTL.
local function log_open(k, window, now)
  local log, sequence = KEYS[k], KEYS[k + 1]
  local value = redis.call('GET', sequence)
  local seq, total
  if value then
    seq, total = string.match(value, '^(%d+):(%d+)$')
  end
  local changed = false
  if total then
    seq, total = tonumber(seq), tonumber(total)
  else
    seq, total = tonumber(value) or 0, 0
    local members = redis.call('ZRANGE', log, 0, -1)
    for j = 1, #members do
      total = total + log_cost(members[j])
      seq = max(seq, tonumber(string.match(members[j], '^(%d+):')) or 0)
    end
    changed = #members > 0
  end
  local cutoff = int(now - window)
  local expired = redis.call('ZRANGEBYSCORE', log, '-inf', cutoff)
  if #expired > 0 then
    for j = 1, #expired do
      total = total - log_cost(expired[j])
    end
    redis.call('ZREMRANGEBYSCORE', log, '-inf', cutoff)
    changed = true
  end
  if not changed and total ~= 0 and redis.call('EXISTS', log) == 0 then
    -- A total whose log is gone (deleted by hand): nothing is counted any more.
    redis.call('DEL', sequence)
    return 0, 0
  end
  if changed then
    local ttl = redis.call('PTTL', log)
    if ttl > 0 then
      redis.call('SET', sequence, int(seq) .. ':' .. int(total), 'PX', ttl)
    else
      -- The log is gone (all of it expired): start afresh.
      redis.call('DEL', log, sequence)
      seq, total = 0, 0
    end
  end
  return seq, total
end

local function sliding_window(k, args, at, now, cost)
  local limit, window = unpack('<dd', args, at)
  local _, used = log_open(k, window, now)
  local oldest = tonumber(redis.call('ZRANGE', KEYS[k], 0, 0, 'WITHSCORES')[2])
  if used + cost <= limit then
    if oldest == nil or now < oldest then
      oldest = now
    end
    return 1, limit - used - cost, oldest + window - now, -1, true, 0
  end
  local retry = -1
  if cost <= limit then
    -- The oldest entries whose costs add up to `must_free` must slide out. Each costs at least
    -- one unit unless free, so the first `must_free - freed` entries not yet read are read next.
    local must_free = used + cost - limit
    local freed, from, found = 0, 0, false
    retry = 1
    repeat
      local want = max(must_free - freed, 1)
      local raw = redis.call('ZRANGE', KEYS[k], from, from + want - 1, 'WITHSCORES')
      for j = 1, #raw, 2 do
        freed = freed + log_cost(raw[j])
        if freed >= must_free then
          retry = max(tonumber(raw[j + 1]) + window - now, 1)
          found = true
          break
        end
      end
      from = from + want
    until found or #raw < 2 * want
  end
  local reset = 0
  if oldest ~= nil then
    reset = oldest + window - now
  end
  return 0, max(limit - used, 0), reset, retry
end

local function log_admit(k, args, at, now, cost)
  local _, window = unpack('<dd', args, at)
  local seq, total = log_open(k, window, now)
  seq = seq + 1
  redis.call('ZADD', KEYS[k], int(now), int(seq) .. ':' .. int(cost))
  local newest = tonumber(redis.call('ZRANGE', KEYS[k], -1, -1, 'WITHSCORES')[2])
  local ttl = int(max(newest + window - now, 1))
  redis.call('PEXPIRE', KEYS[k], ttl)
  redis.call('SET', KEYS[k + 1], int(seq) .. ':' .. int(total + cost), 'PX', ttl)
end
