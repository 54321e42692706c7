-- One rate-limit decision over every window, all-or-nothing: the port of `ratelimit::gcra`
-- and `ratelimit::decide` to Redis. Lua numbers are doubles, so a `tat` is stored as
-- "ms:frac" (frac in 1/limit ms) and every product stays far below 2^53.
-- The body shared by two scripts (composed in `ratelimit/redis.rs`): the limiter's own, and
-- a key's use with its credit spend (`keys/meter.rs`), which stores the windows only once
-- its second step has run. Before it: `n`, the number of windows. After it: `allowed`, `out`
-- (the reply below) and `store()`, which writes every window's new counter.
-- KEYS[1..n]: one counter per window, all under one hash tag.
-- ARGV[1]: now in unix ms, or "" to use Redis TIME (tests pass a controlled clock).
-- ARGV[3i-1], ARGV[3i], ARGV[3i+1]: window i's limit, length in ms and the request's cost
-- there (1 for a request, tokens for a token window).
-- ARGV[3n+2] (optional): "peek" decides without storing anything.
-- Returns {allowed, remaining_1, reset_1, retry_1, ..., remaining_n, reset_n, retry_n}.
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local spend = ARGV[3 * n + 2] ~= 'peek'
local allowed = 1
local rows = {}
for i = 1, n do
  local l = tonumber(ARGV[3 * i - 1])
  local w = tonumber(ARGV[3 * i])
  local c = tonumber(ARGV[3 * i + 1])
  local bms, bfr = now, 0
  local v = redis.call('GET', KEYS[i])
  if v then
    local sep = string.find(v, ':', 1, true)
    local tms = tonumber(string.sub(v, 1, sep - 1))
    local tfr = tonumber(string.sub(v, sep + 1))
    if tms > now or (tms == now and tfr > 0) then
      bms, bfr = tms, tfr
    end
  end
  local behind = (bms - now) * l + bfr
  local ahead = behind + c * w
  local window = w * l
  local nfr = bfr + c * w
  local nms = bms + math.floor(nfr / l)
  nfr = nfr % l
  local r = { l = l, w = w, behind = behind, ahead = ahead, window = window,
              bms = bms, bfr = bfr, nms = nms, nfr = nfr }
  if ahead > window then
    allowed = 0
    r.deny = true
  end
  rows[i] = r
end
local function ceil_secs(ms, frac)
  if frac > 0 then return math.floor(ms / 1000) + 1 end
  return math.ceil(ms / 1000)
end
local out = { allowed }
for i = 1, n do
  local r = rows[i]
  local remaining, reset, retry
  if r.deny then
    local wait_ms = math.ceil((r.ahead - r.window) / r.l)
    remaining = math.floor((r.window - r.behind) / r.w)
    reset = ceil_secs(r.bms, r.bfr)
    retry = math.max(1, math.ceil(wait_ms / 1000))
  elseif allowed == 1 then
    remaining = math.floor((r.window - r.ahead) / r.w)
    reset = ceil_secs(r.nms, r.nfr)
    retry = 0
  else
    remaining = math.floor((r.window - r.behind) / r.w)
    reset = ceil_secs(r.bms, r.bfr)
    retry = 0
  end
  if remaining < 0 then remaining = 0 end
  if remaining > r.l then remaining = r.l end
  out[#out + 1] = remaining
  out[#out + 1] = reset
  out[#out + 1] = retry
end
local function store()
  for i = 1, n do
    local r = rows[i]
    redis.call('SET', KEYS[i], string.format('%d:%d', r.nms, r.nfr),
      'PX', math.max(1, r.nms - now + 1))
  end
end
