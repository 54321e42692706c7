-- Decisions in order, as if each were its own call: rate-limit windows decided all-or-nothing
-- (the port of `ratelimit::gcra` and `ratelimit::decide` to Redis), each optionally followed by
-- the spend of a key's credits (`credits(...)` of credits_core.lua, included before this).
-- The limiter sends the decisions that arrive together under one hash tag in one call
-- (`ratelimit/redis.rs`): the counters are read at once (one MGET) and each balance once,
-- decided on in this script's memory, and written once at the end, so a batch of N decisions
-- costs one round trip and one read and write per counter instead of N. Identical decisions
-- (one busy key's) arrive as one shape with a count and are decided together in closed form.
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
-- Returns one flat array: now (unix ms), then per shape: k (how many of its decisions the
--   windows admitted: the first k; a peek admits iff k >= 1), each window's base before the
--   shape (tat ms, frac: the later of the counter and now), and in mode 2, when k >= 1, what
--   `credits` answered for the first admitted decision (seven numbers, or one negative number
--   alone, in which case none of the shape's decisions stored anything).
local floor, max = math.floor, math.max
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

-- Each shape's decisions, in closed form: identical decisions one after the other admit while
-- every window has room, and a refused one changes nothing, so the first k = min(repeat,
-- room in each window) are admitted and the rest refused. Each admitted decision moves a
-- window's tat by cost * length (in 1/limit ms). The script stores the counters after the k
-- (unless the shape is a peek, or its spend answered a negative code) and answers the bases
-- the decisions started from; the limiter derives each decision's numbers from them
-- (`expand` in ratelimit/redis.rs), as a loop over the decisions here would.
local replies = { now }
local a = 3
local idx, lim, len, cst, bmsv, bfrv = {}, {}, {}, {}, {}, {}
for _ = 1, tonumber(ARGV[2]) do
  local rep, mode, nw = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local at = #replies + 1
  replies[at] = 0
  local k = rep
  for j = 1, nw do
    local i, l, w, c = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]),
      tonumber(ARGV[a + 3])
    a = a + 4
    local bms, bfr = tms[i], tfr[i]
    if bms < now or (bms == now and bfr == 0) then
      bms, bfr = now, 0
    end
    idx[j], lim[j], len[j], cst[j], bmsv[j], bfrv[j] = i, l, w, c, bms, bfr
    local room = w * l - ((bms - now) * l + bfr)
    local cap
    if c * w > 0 then
      cap = floor(room / (c * w))
    elseif room >= 0 then
      cap = k
    else
      cap = 0
    end
    if cap < k then k = cap end
    replies[at + 2 * j - 1], replies[at + 2 * j] = bms, bfr
  end
  if k < 0 then k = 0 end
  replies[at] = k
  local stored = k
  if mode == 2 then
    local ck = tonumber(ARGV[a])
    local ca = {}
    for j = 1, 7 do ca[j] = tonumber(ARGV[a + j]) end
    a = a + 8
    if k >= 1 then
      local out = credits(ck, ca)
      for j = 1, #out do replies[#replies + 1] = out[j] end
      if #out == 1 then
        -- Nothing stored, for this decision or the identical ones after it.
        stored = 0
      else
        -- The other k - 1 spend as `credits` would, one after the other. Only the remaining
        -- can change now: the first call settled the generation, and a refill cannot follow
        -- (its period start is the same for every decision of the shape). `expand` in
        -- ratelimit/redis.rs derives the replies with `Balance::spend`, the same rule.
        local s, cost = held[ck], ca[2]
        local r = s[2]
        for _ = 2, k do
          if r > 0 and cost <= r then r = r - cost end
        end
        s[2] = r
      end
    end
  end
  if mode ~= 1 and stored >= 1 then
    for j = 1, nw do
      local i, l = idx[j], lim[j]
      local nfr = bfrv[j] + stored * cst[j] * len[j]
      tms[i], tfr[i] = bmsv[j] + floor(nfr / l), nfr % l
      written[i] = true
    end
  end
end

for k in pairs(written) do
  redis.call('SET', KEYS[k], string.format('%d:%d', tms[k], tfr[k]),
    'PX', max(1, tms[k] - now + 1))
end
store_credits()
return replies
