-- Spends credits of one API key, atomically: `credits(k, ca)` on the key's balance KEYS[k], a
-- hash of g (settings generation), r (remaining), b (amount last set or refilled), p (period:
-- unix ms of that set or refill), with its arguments `ca`: generation, cost, start of the
-- current period, refill amount (-1: none), then the balance to start from when the hash is
-- missing or older: remaining, base, period (read from storage by the caller after a first
-- answer of {-1}), or -1, -1, -1 when the caller has not read it.
-- Returns, changing nothing, {-1} when the hash is missing or older and no balance was given,
-- {-2} when the hash holds newer settings than the caller's generation (its record is from
-- before a change: it must read the line's settings again); else
-- {admitted, remaining, base, period, low, exhausted, generation}.
-- A balance is read once per script call and kept in the script's memory, so several spends
-- of one call decide one after the other; `store_credits()` writes the balances that changed.
-- The rule is `Balance::spend` in src/domain/credits.rs, exactly. Every number stays below
-- 2^53, so Lua's doubles hold them exactly.
-- Included before decide.lua (src/ratelimit), which runs it for the first decision of a shape
-- whose windows admitted it (or alone, for a spend without windows), and applies the same
-- rule to the shape's other admitted decisions in a loop of its own.
local held, changed = {}, {}
local function credits(k, ca)
  local s = held[k]
  if s == nil then
    local h = redis.call('HMGET', KEYS[k], 'g', 'r', 'b', 'p')
    s = { tonumber(h[1]), tonumber(h[2]), tonumber(h[3]), tonumber(h[4]) }
    held[k] = s
  end
  local gen, cost, cur, amount = ca[1], ca[2], ca[3], ca[4]
  local g, r, b, p = s[1], s[2], s[3], s[4]
  if g ~= nil and g > gen then
    return {-2}
  end
  if g == nil or g < gen then
    if ca[5] < 0 then
      return {-1}
    end
    g, r, b, p = gen, ca[5], ca[6], ca[7]
  end
  if amount >= 0 and p < cur then
    r, b, p = amount, amount, cur
  end
  local admitted, low, exhausted = 0, 0, 0
  if r > 0 and cost <= r then
    local before = r
    r = r - cost
    admitted = 1
    local threshold = (b - b % 10) / 10
    if before > threshold and r <= threshold then low = 1 end
    if r == 0 then exhausted = 1 end
  end
  s[1], s[2], s[3], s[4] = g, r, b, p
  changed[k] = true
  return {admitted, r, b, p, low, exhausted, g}
end
local function store_credits()
  for k in pairs(changed) do
    local s = held[k]
    -- Written as integers ('%d'): Redis may write a Lua number such as 1e15 in exponent
    -- form, which HINCRBY (the refund after a failed commit) cannot read.
    redis.call('HSET', KEYS[k], 'g', string.format('%d', s[1]), 'r', string.format('%d', s[2]),
      'b', string.format('%d', s[3]), 'p', string.format('%d', s[4]))
    -- A balance nobody uses for 40 days is dropped; the next use reads storage again.
    redis.call('PEXPIRE', KEYS[k], 3456000000)
  end
end
