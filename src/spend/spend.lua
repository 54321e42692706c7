-- Budget counters, atomically (see src/spend/counters.rs and docs/spend.md).
-- KEYS come in pairs per budget: the settled-spend counter, then the reservations hash
-- (lease id -> "amount:expires_ms"). Every key of one call shares the organization's hash tag.
-- ARGV[1] is the operation, ARGV[2] the time (unix ms).
local op = ARGV[1]
local now = tonumber(ARGV[2])
local n = #KEYS / 2

if op == 'reserve' then
  -- ARGV: 3 lease, 4 amount, 5 lease expiry (ms), 6.. one limit per budget (-1: soft).
  local lease, amount, expires = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
  local spent, inflight, need = {}, {}, {}
  for i = 1, n do
    local sk, rk = KEYS[2 * i - 1], KEYS[2 * i]
    local all = redis.call('HGETALL', rk)
    local sum, purged = 0, false
    for j = 1, #all, 2 do
      local a, e = string.match(all[j + 1], '^(%-?%d+):(%-?%d+)$')
      if e == nil or tonumber(e) <= now then
        redis.call('HDEL', rk, all[j])
        purged = true
      else
        sum = sum + tonumber(a)
      end
    end
    -- A lease that expired may have been settled in the ledger but not here: recount.
    if purged then redis.call('DEL', sk) end
    local s = redis.call('GET', sk)
    if s then spent[i] = tonumber(s) else table.insert(need, i) end
    inflight[i] = sum
  end
  if #need > 0 then
    local r = {2}
    for _, i in ipairs(need) do table.insert(r, i) end
    return r
  end
  for i = 1, n do
    local limit = tonumber(ARGV[5 + i])
    if limit >= 0 and spent[i] + inflight[i] + amount > limit then
      return {0, i, spent[i]}
    end
  end
  for i = 1, n do
    local rk = KEYS[2 * i]
    redis.call('HSET', rk, lease, amount .. ':' .. expires)
    if redis.call('PTTL', rk) < expires - now then
      redis.call('PEXPIRE', rk, expires - now + 60000)
    end
  end
  return {1}
elseif op == 'seed' then
  -- ARGV: per budget, the settled spend from the ledger and the counter's lifetime (ms).
  for i = 1, n do
    redis.call('SET', KEYS[2 * i - 1], ARGV[1 + 2 * i], 'PX', ARGV[2 + 2 * i], 'NX')
  end
  return {1}
elseif op == 'settle' then
  -- ARGV: 3 lease, 4 cost. A lease settled (or expired) before adds nothing: the ledger
  -- holds the cost and the next reservation recounts.
  local lease, cost = ARGV[3], tonumber(ARGV[4])
  local r = {1}
  for i = 1, n do
    local v = -1
    if redis.call('HDEL', KEYS[2 * i], lease) == 1 and redis.call('EXISTS', KEYS[2 * i - 1]) == 1 then
      v = redis.call('INCRBY', KEYS[2 * i - 1], cost)
    end
    table.insert(r, v)
  end
  return r
elseif op == 'renew' then
  -- ARGV: 3 lease, 4 new expiry (ms).
  local lease, expires = ARGV[3], tonumber(ARGV[4])
  for i = 1, n do
    local rk = KEYS[2 * i]
    local v = redis.call('HGET', rk, lease)
    if v then
      local a = string.match(v, '^(%-?%d+):')
      redis.call('HSET', rk, lease, a .. ':' .. expires)
      if redis.call('PTTL', rk) < expires - now then
        redis.call('PEXPIRE', rk, expires - now + 60000)
      end
    end
  end
  return {1}
end
return redis.error_reply('unknown operation')
