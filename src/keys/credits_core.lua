-- Spends credits of one API key, atomically: `credits(ck, a)` on the key's balance `ck`, a
-- hash of g (settings generation), r (remaining), b (amount last set or refilled), p (period:
-- unix ms of that set or refill), with its arguments in ARGV[a+1..]: generation, cost, start
-- of the current period, refill amount (-1: none), then optionally the balance to start from
-- when the hash is missing or older: remaining, base, period (read from storage by the caller
-- after a first answer of {-1}).
-- Returns, storing nothing, {-1} when the hash is missing or older and no balance was given,
-- {-2} when the hash holds newer settings than the caller's generation (its record is from
-- before a change: it must read the line's settings again); else
-- {admitted, remaining, base, period, low, exhausted, generation}.
-- The rule is `Balance::spend` in src/domain/credits.rs, exactly. Every number stays below
-- 2^53, so Lua's doubles hold them exactly.
-- Composed (`keys/meter.rs`) into the meter's own script and into a key's use, where it runs
-- after the windows of gcra_core.lua admitted the request.
local function credits(ck, a)
  local gen = tonumber(ARGV[a + 1])
  local cost = tonumber(ARGV[a + 2])
  local cur = tonumber(ARGV[a + 3])
  local amount = tonumber(ARGV[a + 4])
  local h = redis.call('HMGET', ck, 'g', 'r', 'b', 'p')
  local g, r, b, p = tonumber(h[1]), tonumber(h[2]), tonumber(h[3]), tonumber(h[4])
  if g ~= nil and g > gen then
    return {-2}
  end
  if g == nil or g < gen then
    if ARGV[a + 5] == nil then
      return {-1}
    end
    g, r, b, p = gen, tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7])
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
  redis.call('HSET', ck, 'g', g, 'r', r, 'b', b, 'p', p)
  -- A balance nobody uses for 40 days is dropped; the next use reads storage again.
  redis.call('PEXPIRE', ck, 3456000000)
  return {admitted, r, b, p, low, exhausted, g}
end
