-- Sliding log: ZSET of admitted requests (score = time, member = '<seq>:<cost>') and, beside
-- it, a string '<seq>:<total>': the last sequence number (it keeps members unique) and the sum
-- of the costs the ZSET holds. Parameters: limit, window. KEYS[k] is the log, KEYS[k + 1] the
-- sequence key. Its admission is `log_admit` (several commands at once, not a `store`).
--
-- A check never reads the whole log: it reads the sequence key and the oldest entry, drops the
-- expired entries by score range only when the oldest has expired (each entry once:
-- O(log n + expired)), after which every entry left is counted and `used` is the total. Only a
-- rejection whose cost needs more than the oldest entry to slide out reads further.
--
-- What a check learns of a log is kept for the rest of the batch (`now` is the same for all
-- its checks), so further checks of a hot key cost no command until one is admitted, which
-- updates what is kept.
--
-- A sequence key holding a bare number (written before totals were kept) or missing beside a
-- log has its total rebuilt once from the log, and its sequence number from the members.

local function log_cost(member)
  return tonumber(string.match(member, ':(%d+)$'))
end

-- This batch's view of each sliding log it has opened: log key -> { seq, total, oldest,
-- oldest_cost } (oldest: the score of the oldest entry, nil when the log is empty).
local logs = {}

-- The oldest entry's score and cost, or nil.
local function oldest_entry(log)
  local raw = redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')
  if raw[1] then
    return tonumber(raw[2]), log_cost(raw[1])
  end
  return nil, nil
end

-- The sequence number and total the sequence key holds, and whether they had to be rebuilt
-- from the log.
local function read_sequence(log, sequence)
  local value = redis.call('GET', sequence)
  if value then
    local seq, total = string.match(value, '^(%d+):(%d+)$')
    if total then
      return tonumber(seq), tonumber(total), false
    end
  end
  local seq, total = tonumber(value) or 0, 0
  local members = redis.call('ZRANGE', log, 0, -1)
  for j = 1, #members do
    total = total + log_cost(members[j])
    seq = max(seq, tonumber(string.match(members[j], '^(%d+):')) or 0)
  end
  return seq, total, #members > 0
end

-- The log's view at `now`, after dropping the entries that no longer count (admitted at t with
-- t + window <= now). Writes the sequence key back when that changed it, with the log's TTL.
local function log_open(k, window, now)
  local log, sequence = KEYS[k], KEYS[k + 1]
  local view = logs[log]
  if view then
    return view
  end
  local seq, total, changed = read_sequence(log, sequence)
  local oldest, oldest_cost = oldest_entry(log)
  local cutoff = int(now - window)
  if oldest and oldest <= now - window then
    local expired = redis.call('ZRANGEBYSCORE', log, '-inf', cutoff)
    for j = 1, #expired do
      total = total - log_cost(expired[j])
    end
    redis.call('ZREMRANGEBYSCORE', log, '-inf', cutoff)
    changed = true
    oldest, oldest_cost = oldest_entry(log)
  end
  if oldest and changed then
    local ttl = redis.call('PTTL', log)
    if ttl > 0 then
      redis.call('SET', sequence, int(seq) .. ':' .. int(total), 'PX', ttl)
    else
      -- A log without a TTL was not written by this script: it is not trusted.
      oldest = nil
    end
  end
  if not oldest then
    -- Nothing left to count (all expired, or the log deleted or replaced by hand): start
    -- afresh.
    if total ~= 0 or seq ~= 0 then
      redis.call('DEL', log, sequence)
    end
    seq, total = 0, 0
  end
  view = { seq = seq, total = total, oldest = oldest, oldest_cost = oldest_cost }
  logs[log] = view
  return view
end

local function sliding_window(k, args, at, now, cost)
  local limit, window = unpack('<dd', args, at)
  local view = log_open(k, window, now)
  local used, oldest = view.total, view.oldest
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
    retry = 1
    if view.oldest_cost >= must_free then
      retry = max(oldest + window - now, 1)
    else
      local freed, from, found = 0, 0, false
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
  end
  local reset = 0
  if oldest ~= nil then
    reset = oldest + window - now
  end
  return 0, max(limit - used, 0), reset, retry
end

local function log_admit(k, args, at, now, cost)
  local _, window = unpack('<dd', args, at)
  local view = log_open(k, window, now)
  view.seq = view.seq + 1
  view.total = view.total + cost
  if view.oldest == nil or now < view.oldest then
    view.oldest, view.oldest_cost = now, cost
  end
  redis.call('ZADD', KEYS[k], int(now), int(view.seq) .. ':' .. int(cost))
  local newest = tonumber(redis.call('ZRANGE', KEYS[k], -1, -1, 'WITHSCORES')[2])
  local ttl = int(max(newest + window - now, 1))
  redis.call('PEXPIRE', KEYS[k], ttl)
  redis.call('SET', KEYS[k + 1], int(view.seq) .. ':' .. int(view.total), 'PX', ttl)
end
