-- Evaluates every quota, then records in all of them only if all allow (a rejected request is
-- never counted). Returns 4 integers per quota: allowed (1/0), remaining, reset_after_ms,
-- retry_after_ms (-1: never).
local now = now_ms()
local cost = tonumber(ARGV[2])
local commit = ARGV[3] == '1'
local quotas = tonumber(ARGV[4])
local loaded = {}
local reply = {}
local all_allowed = true
for i = 1, quotas do
  local p = params(i)
  local s = load(i, p, now)
  local verdict = evaluate(p, s, now, cost)
  loaded[i] = { p, s }
  if verdict[1] == 0 then
    all_allowed = false
  end
  for j = 1, 4 do
    reply[#reply + 1] = verdict[j]
  end
end
if commit then
  for i = 1, quotas do
    local p, s = loaded[i][1], loaded[i][2]
    if all_allowed then
      admit(i, p, s, now, cost)
    elseif s == nil then
      first_rejection(i, p, now)
    end
  end
end
return reply
