-- wrk script of bench/run: a flood of unknown API keys from one address. Every request is
-- GET /v1/me with a key no one minted but of the right shape (prefix, env, 43 base62
-- characters and the 6-character base62 CRC32 checksum, as src/auth/api_key.rs mints them),
-- each key used once, so the server's negative cache never answers for it. The address is
-- the X-Forwarded-For of a trusted proxy (bench/run starts this server with
-- trusted_proxies = 127.0.0.1).
--
-- Arguments (after --): the address, the key prefix (default gk), a delay in ms between two
-- requests of one connection (default 0: as fast as the server answers), and optionally
-- "malformed": then every key's checksum is wrong, so the server refuses it without a lookup
-- (the reference: what a flood of refused requests costs when none reaches storage).
--
-- CRC32 is written here with LuaJIT's `bit` operations (wrk has no zlib) and checked at
-- start against the standard check value, so a wrong checksum fails loudly instead of
-- measuring cheap `malformed` refusals. done() prints one line that bench/run reads:
--   junk: <answers> answers, <n> not_found, <n> malformed, <n> 429, <n> other

local bit = require("bit")
local band, bxor, bnot, rshift = bit.band, bit.bxor, bit.bnot, bit.rshift
local byte, format = string.byte, string.format

local CRC = {}
for i = 0, 255 do
    local c = i
    for _ = 1, 8 do
        if band(c, 1) ~= 0 then
            c = bxor(rshift(c, 1), 0xEDB88320)
        else
            c = rshift(c, 1)
        end
    end
    CRC[i] = c
end

local function crc32(s)
    local c = bnot(0)
    for i = 1, #s do
        c = bxor(CRC[band(bxor(c, byte(s, i)), 0xFF)], rshift(c, 8))
    end
    c = bnot(c)
    if c < 0 then c = c + 4294967296 end
    return c
end

local BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

local function checksum(s)
    local n = crc32(s)
    local out = {}
    for i = 6, 1, -1 do
        local d = n % 62
        out[i] = BASE62:sub(d + 1, d + 1)
        n = (n - d) / 62
    end
    return table.concat(out)
end

if crc32("123456789") ~= 0xCBF43926 then
    error("junk.lua: the CRC32 implementation is wrong")
end

local address, prefix, pause, spoil = "203.0.113.66", "gk", 0, false
local stem = ""
local counter = 0
-- Globals, not locals: done() reads them from each thread with thread:get.
answers, not_found, malformed, limited, other = 0, 0, 0, 0, 0
local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    address = args[1] or address
    prefix = args[2] or prefix
    pause = tonumber(args[3] or "0") or 0
    spoil = args[4] == "malformed"
    -- 27 random base62 characters per wrk thread, then a 16-digit counter: 43 in all.
    local f = io.open("/dev/urandom", "rb")
    local raw = f and f:read(27) or tostring(os.time()):rep(4)
    if f then f:close() end
    local chars = {}
    for i = 1, 27 do
        local d = byte(raw, i) % 62
        chars[i] = BASE62:sub(d + 1, d + 1)
    end
    stem = table.concat(chars)
    wrk.path = "/v1/me"
end

function request()
    counter = counter + 1
    local head = format("%s_live_%s%016d", prefix, stem, counter)
    local sum = checksum(head)
    if spoil then
        -- A different last character: a checksum that cannot match.
        sum = sum:sub(1, 5) .. (sum:sub(6, 6) == "0" and "1" or "0")
    end
    return wrk.format("GET", "/v1/me", {
        ["x-api-key"] = head .. sum,
        ["x-forwarded-for"] = address,
    })
end

function delay()
    return pause
end

function response(status, headers, body)
    answers = answers + 1
    if status == 429 then
        limited = limited + 1
    elseif status == 401 and body and body:find("not_found", 1, true) then
        not_found = not_found + 1
    elseif status == 401 and body and body:find("malformed", 1, true) then
        malformed = malformed + 1
    else
        other = other + 1
    end
end

function done(summary, latency, requests)
    local t = { 0, 0, 0, 0, 0 }
    for _, thread in ipairs(threads) do
        t[1] = t[1] + (thread:get("answers") or 0)
        t[2] = t[2] + (thread:get("not_found") or 0)
        t[3] = t[3] + (thread:get("malformed") or 0)
        t[4] = t[4] + (thread:get("limited") or 0)
        t[5] = t[5] + (thread:get("other") or 0)
    end
    io.write(format("junk: %d answers, %d not_found, %d malformed, %d 429, %d other\n",
        t[1], t[2], t[3], t[4], t[5]))
end
