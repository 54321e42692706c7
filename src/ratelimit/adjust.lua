-- The settle of a reservation: charges (delta > 0) or gives back (delta < 0) units of each
-- window without deciding; the port of `ratelimit::adjusted` to Redis. A `tat` is stored as
-- "ms:frac" (frac in 1/limit ms), as decide.lua keeps it.
-- KEYS: one counter per window, all under one hash tag.
-- ARGV[1]: now in unix ms, or "" to use Redis TIME.
-- ARGV[3i-1], ARGV[3i], ARGV[3i+1]: window i's limit, length in ms and delta.
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
for i = 1, #KEYS do
  local l = tonumber(ARGV[3 * i - 1])
  local w = tonumber(ARGV[3 * i])
  local d = tonumber(ARGV[3 * i + 1])
  local v = redis.call('GET', KEYS[i])
  local tms, tfr = nil, 0
  if v then
    local sep = string.find(v, ':', 1, true)
    tms = tonumber(string.sub(v, 1, sep - 1))
    tfr = tonumber(string.sub(v, sep + 1))
  end
  local bms, bfr = nil, 0
  if d > 0 then
    bms, bfr = now, 0
    if tms and (tms > now or (tms == now and tfr > 0)) then
      bms, bfr = tms, tfr
    end
  elseif tms then
    bms, bfr = tms, tfr
  end
  if bms then
    local total = bfr + d * w
    local nms = bms + math.floor(total / l)
    local nfr = total % l
    if nms < now then
      redis.call('DEL', KEYS[i])
    else
      redis.call('SET', KEYS[i], string.format('%d:%d', nms, nfr), 'PX', math.max(1, nms - now + 1))
    end
  end
end
return 1
