-- wrk script of bench/run: signed widget chat calls, POST /v1/widgets/{id}/chat.
--
-- Arguments (after --): the sessions file, the widget id, the Origin. The file has one open
-- widget session a line: "<session_token> <signing_secret>".
--
-- Every request carries a fresh nonce and is signed here, in LuaJIT, with HMAC-SHA256
-- (implemented below with LuaJIT's `bit` operations; wrk has no crypto library):
--   X-Gatehouse-Signature: v1=<hex HMAC-SHA256(signing_secret, "{ts}.{nonce}.POST.{path}.{body}")>
-- Why sign here rather than replay requests signed beforehand: the server refuses a nonce
-- twice, so a pre-signed file must hold one request per request sent, and how many that is
-- depends on how fast the server turns out to be (a file that runs out would replay, i.e.
-- turn into 401s). Signing per request has no such bound, keeps memory flat and costs wrk a
-- few microseconds per request, on its own core. The implementation checks itself at start
-- against RFC 4231's test vector (and bench/run's sanity request is signed by openssl), so a
-- wrong signature fails loudly instead of measuring 401s.
--
-- Nonces are "<16 hex digits from /dev/urandom><10-digit counter>": unique per wrk process
-- and per request, so the warm-up run and the measured run never collide.

local bit = require("bit")
local band, bor, bxor, bnot = bit.band, bit.bor, bit.bxor, bit.bnot
local rshift, lshift, ror, tobit, tohex = bit.rshift, bit.lshift, bit.ror, bit.tobit, bit.tohex
local byte, char, sub, format = string.byte, string.char, string.sub, string.format

local K = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}
for j = 1, 64 do K[j] = tobit(K[j]) end
local IV = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 }
for j = 1, 8 do IV[j] = tobit(IV[j]) end

local W = {}

-- One SHA-256 compression of the 64 bytes of `s` from `at` (1-based) into state `H`.
local function compress(H, s, at)
    for j = 1, 16 do
        local b1, b2, b3, b4 = byte(s, at, at + 3)
        W[j] = bor(lshift(b1, 24), lshift(b2, 16), lshift(b3, 8), b4)
        at = at + 4
    end
    for j = 17, 64 do
        local w15, w2 = W[j - 15], W[j - 2]
        local s0 = bxor(ror(w15, 7), ror(w15, 18), rshift(w15, 3))
        local s1 = bxor(ror(w2, 17), ror(w2, 19), rshift(w2, 10))
        W[j] = tobit(W[j - 16] + s0 + W[j - 7] + s1)
    end
    local a, b, c, d, e, f, g, h = H[1], H[2], H[3], H[4], H[5], H[6], H[7], H[8]
    for j = 1, 64 do
        local S1 = bxor(ror(e, 6), ror(e, 11), ror(e, 25))
        local ch = bxor(band(e, f), band(bnot(e), g))
        local t1 = tobit(h + S1 + ch + K[j] + W[j])
        local S0 = bxor(ror(a, 2), ror(a, 13), ror(a, 22))
        local maj = bxor(band(a, b), band(a, c), band(b, c))
        h, g, f, e, d, c, b, a = g, f, e, tobit(d + t1), c, b, a, tobit(t1 + S0 + maj)
    end
    H[1], H[2], H[3], H[4] = tobit(H[1] + a), tobit(H[2] + b), tobit(H[3] + c), tobit(H[4] + d)
    H[5], H[6], H[7], H[8] = tobit(H[5] + e), tobit(H[6] + f), tobit(H[7] + g), tobit(H[8] + h)
end

-- SHA-256 of `msg`, continuing from state `start` after `done` bytes already compressed
-- (a multiple of 64). Returns the 8 state words.
local function finish(start, done, msg)
    local H = { start[1], start[2], start[3], start[4], start[5], start[6], start[7], start[8] }
    local len = #msg
    local total = done + len
    local padlen = 64 - ((len + 9) % 64)
    if padlen == 64 then padlen = 0 end
    local bits = total * 8
    local lenbytes = {}
    for j = 8, 1, -1 do
        lenbytes[j] = char(bits % 256)
        bits = math.floor(bits / 256)
    end
    local m = msg .. "\128" .. string.rep("\0", padlen) .. table.concat(lenbytes)
    for at = 1, #m, 64 do compress(H, m, at) end
    return H
end

local function words_to_bytes(H)
    local t = {}
    for j = 1, 8 do
        local w = H[j]
        t[j] = char(band(rshift(w, 24), 255), band(rshift(w, 16), 255), band(rshift(w, 8), 255), band(w, 255))
    end
    return table.concat(t)
end

local function words_to_hex(H)
    local t = {}
    for j = 1, 8 do t[j] = tohex(H[j], 8) end
    return table.concat(t)
end

-- The HMAC key schedule: the states after the key block xor ipad and xor opad.
local function hmac_key(key)
    if #key > 64 then key = words_to_bytes(finish(IV, 0, key)) end
    key = key .. string.rep("\0", 64 - #key)
    local ipad, opad = {}, {}
    for j = 1, 64 do
        local k = byte(key, j)
        ipad[j] = char(bxor(k, 0x36))
        opad[j] = char(bxor(k, 0x5c))
    end
    local inner = { IV[1], IV[2], IV[3], IV[4], IV[5], IV[6], IV[7], IV[8] }
    local outer = { IV[1], IV[2], IV[3], IV[4], IV[5], IV[6], IV[7], IV[8] }
    compress(inner, table.concat(ipad), 1)
    compress(outer, table.concat(opad), 1)
    return { inner = inner, outer = outer }
end

local function hmac_hex(k, msg)
    local inner = finish(k.inner, 64, msg)
    return words_to_hex(finish(k.outer, 64, words_to_bytes(inner)))
end

-- RFC 4231, test case 2, and a key longer than a block (test case 6).
assert(hmac_hex(hmac_key("Jefe"), "what do ya want for nothing?")
    == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    "widget.lua: HMAC-SHA256 self-test failed (RFC 4231 case 2)")
assert(hmac_hex(hmac_key(string.rep("\170", 131)), "Test Using Larger Than Block-Size Key - Hash Key First")
    == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    "widget.lua: HMAC-SHA256 self-test failed (RFC 4231 case 6)")

local sessions = {}
local nsessions = 0
local cursor = 0
local counter = 0
local tag = ""
local path, origin
local BODY = '{"message":"Hello from bench/run"}'

function init(args)
    local file, widget = args[1], args[2]
    origin = args[3]
    if not (file and widget and origin) then
        error("widget.lua: expected the sessions file, the widget id and the Origin as arguments")
    end
    path = "/v1/widgets/" .. widget .. "/chat"
    local f = io.open(file, "r")
    if not f then error("widget.lua: cannot open " .. file) end
    for line in f:lines() do
        local token, secret = line:match("^(%S+)%s+(%S+)$")
        if token then
            nsessions = nsessions + 1
            sessions[nsessions] = { auth = "Bearer " .. token, key = hmac_key(secret) }
        end
    end
    f:close()
    if nsessions == 0 then error("widget.lua: no session in " .. file) end
    local r = io.open("/dev/urandom", "rb")
    local raw = r:read(8)
    r:close()
    for j = 1, 8 do tag = tag .. format("%02x", byte(raw, j)) end
end

function request()
    cursor = cursor % nsessions + 1
    counter = counter + 1
    local s = sessions[cursor]
    local ts = tostring(os.time())
    local nonce = tag .. format("%010d", counter)
    local sig = hmac_hex(s.key, ts .. "." .. nonce .. ".POST." .. path .. "." .. BODY)
    return wrk.format("POST", path, {
        ["Origin"] = origin,
        ["Authorization"] = s.auth,
        ["Content-Type"] = "application/json",
        ["X-Gatehouse-Timestamp"] = ts,
        ["X-Gatehouse-Nonce"] = nonce,
        ["X-Gatehouse-Signature"] = "v1=" .. sig,
    }, BODY)
end
