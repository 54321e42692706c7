-- Decisions in order, as if each were its own call: rate-limit windows decided all-or-nothing
-- (the port of `ratelimit::gcra` and `ratelimit::decide` to Redis), each optionally followed by
-- the spend of a key's credits (`credits(...)` of credits_core.lua, included before this).
-- The limiter sends the decisions that arrive together under one hash tag in one call
-- (`ratelimit/redis.rs`): the counters are read at once (one MGET) and each balance once,
-- decided on in this script's memory, and written once at the end, so a batch of N decisions
-- costs one round trip and one read and write per counter instead of N.
-- Lua numbers are doubles, so a window's `tat` is stored as "ms:frac" (frac in 1/limit ms) and
-- every product stays far below 2^53.
-- KEYS: the counters (one string per window) and balances (one hash per roll line) the
-- decisions use, all under one hash tag.
-- ARGV[1]: now in unix ms, or "" to use Redis TIME (tests pass a controlled clock).
-- ARGV[2]: the number of shapes; then each shape, one after the other:
--   repeat (how many identical decisions), mode (0 check, 1 peek: decide without storing,
--   2 check then spend credits), the number of windows, then per window: the index of its
--   counter in KEYS, its limit, its length in ms and the request's cost there (1 for a
--   request, tokens for a token window); in mode 2 then the index of the balance in KEYS and
--   the seven arguments of `credits` (generation, cost, period start, refill amount, and the
--   balance to start from: remaining, base, period, or -1 -1 -1).
-- Returns one reply per decision, shape by shape:
--   {allowed, remaining_1, reset_1, retry_1, ..., remaining_n, reset_n, retry_n}, followed in
--   mode 2, when the windows admitted, by the seven numbers `credits` answers; or `credits`'
--   one negative number alone, in which case that decision stored nothing.
local floor, ceil, max = math.floor, math.ceil, math.max
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000)
end

-- Every counter, read at once (a balance's hash reads as nil here): tat ms and frac, 0 and 0
-- when missing; written at the end when a decision moved it.
local tms, tfr, written = {}, {}, {}
do
  local got = redis.call('MGET', unpack(KEYS))
  for k = 1, #KEYS do
    local v = got[k]
    local sep = v and string.find(v, ':', 1, true)
    local ms = sep and tonumber(string.sub(v, 1, sep - 1))
    local fr = sep and tonumber(string.sub(v, sep + 1))
    -- Missing, or not a counter this script wrote: a fresh window.
    if ms and fr then
      tms[k], tfr[k] = ms, fr
    else
      tms[k], tfr[k] = 0, 0
    end
  end
end

local function ceil_secs(ms, frac)
  if frac > 0 then return floor(ms / 1000) + 1 end
  return ceil(ms / 1000)
end

-- Each window's base (its tat when ahead of now, else now), found in the first pass over a
-- decision's windows and used by the second; reused from decision to decision.
local bmsv, bfrv = {}, {}

-- One decision over the windows `win` (4 numbers each) and, in mode 2, the credits.
local function decide(win, nw, mode, ck, ca)
  local allowed = 1
  for j = 1, nw do
    local o = 4 * j - 4
    local k, l, w, c = win[o + 1], win[o + 2], win[o + 3], win[o + 4]
    local bms, bfr = tms[k], tfr[k]
    if bms < now or (bms == now and bfr == 0) then
      bms, bfr = now, 0
    end
    bmsv[j], bfrv[j] = bms, bfr
    if (bms - now) * l + bfr + c * w > w * l then
      allowed = 0
    end
  end
  local out
  if mode == 2 and allowed == 1 then
    out = credits(ck, ca)
    if #out == 1 then
      return out
    end
  end
  local reply = { allowed }
  for j = 1, nw do
    local o = 4 * j - 4
    local l, w, c = win[o + 2], win[o + 3], win[o + 4]
    local bms, bfr = bmsv[j], bfrv[j]
    local behind = (bms - now) * l + bfr
    local ahead = behind + c * w
    local window = w * l
    local remaining, reset, retry
    if ahead > window then
      remaining = floor((window - behind) / w)
      reset = ceil_secs(bms, bfr)
      retry = max(1, ceil(ceil((ahead - window) / l) / 1000))
    elseif allowed == 1 then
      local nfr = bfr + c * w
      local nms = bms + floor(nfr / l)
      nfr = nfr % l
      remaining = floor((window - ahead) / w)
      reset = ceil_secs(nms, nfr)
      retry = 0
      -- Kept in the base's place until every window is decided.
      bmsv[j], bfrv[j] = nms, nfr
    else
      remaining = floor((window - behind) / w)
      reset = ceil_secs(bms, bfr)
      retry = 0
    end
    if remaining < 0 then remaining = 0 end
    if remaining > l then remaining = l end
    reply[3 * j - 1], reply[3 * j], reply[3 * j + 1] = remaining, reset, retry
  end
  if allowed == 1 and mode ~= 1 then
    for j = 1, nw do
      local k = win[4 * j - 3]
      tms[k], tfr[k] = bmsv[j], bfrv[j]
      written[k] = true
    end
  end
  if out then
    local o = #reply
    for i = 1, #out do reply[o + i] = out[i] end
  end
  return reply
end

local replies = {}
local a = 3
for _ = 1, tonumber(ARGV[2]) do
  local rep, mode, nw = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local win = {}
  for j = 1, 4 * nw do win[j] = tonumber(ARGV[a + j - 1]) end
  a = a + 4 * nw
  local ck, ca
  if mode == 2 then
    ck = tonumber(ARGV[a])
    ca = {}
    for j = 1, 7 do ca[j] = tonumber(ARGV[a + j]) end
    a = a + 8
  end
  for _ = 1, rep do
    replies[#replies + 1] = decide(win, nw, mode, ck, ca)
  end
end

for k in pairs(written) do
  redis.call('SET', KEYS[k], string.format('%d:%d', tms[k], tfr[k]),
    'PX', max(1, tms[k] - now + 1))
end
store_credits()
return replies
