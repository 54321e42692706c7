-- Spends credits of one API key, atomically. KEYS[1]: the key's balance, a hash of
-- g (settings generation), r (remaining), b (amount last set or refilled), p (period: unix ms
-- of that set or refill).
-- ARGV: generation, cost, start of the current period, refill amount (-1: none), then
-- optionally the balance to start from when the hash is missing or older: remaining, base,
-- period (read from storage by the caller after a first answer of {-1}).
-- The rule is `Balance::spend` in src/domain/credits.rs, exactly. Every number stays below
-- 2^53, so Lua's doubles hold them exactly.
local gen = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local cur = tonumber(ARGV[3])
local amount = tonumber(ARGV[4])
local h = redis.call('HMGET', KEYS[1], 'g', 'r', 'b', 'p')
local g, r, b, p = tonumber(h[1]), tonumber(h[2]), tonumber(h[3]), tonumber(h[4])
if g == nil or g < gen then
  if ARGV[5] == nil then
    return {-1}
  end
  g, r, b, p = gen, tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
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
redis.call('HSET', KEYS[1], 'g', g, 'r', r, 'b', b, 'p', p)
-- A balance nobody uses for 40 days is dropped; the next use reads storage again.
redis.call('PEXPIRE', KEYS[1], 3456000000)
return {admitted, r, b, p, low, exhausted, g}
