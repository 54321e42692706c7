-- wrk script of bench/run's keys-in-use rows: GET /v1/me with an API key in x-api-key, each
-- request with the next key of a file (one key a line), cycling, so that the load is spread
-- evenly over every key of the file. Arguments (after --): the file, and optionally "sweep"
-- and the connection count (wrk -c): then every key is sent once, from the first, and wrk
-- ends as soon as they have all been answered, printing "sweep: all N keys answered 200" (or
-- how many answers were not 200). bench/run primes the server's caches with it before a warm
-- run. Once every key is sent, the sweep repeats the first (already cached) until it has as
-- many answers again as twice the connections: a connection's answers come in order, so by
-- then every key sent before them has been answered too.
local keys = {}
local n = 0
local i = 0
local sweep = false
local answered = 0
local bad = 0
local extra = 0

function init(args)
    local path = args[1]
    local f = path and io.open(path, "r")
    if not f then error("keys.lua: cannot open the key file " .. tostring(path)) end
    for line in f:lines() do
        if #line > 0 then
            n = n + 1
            keys[n] = line
        end
    end
    f:close()
    if n == 0 then error("keys.lua: no key in " .. path) end
    sweep = args[2] == "sweep"
    if sweep then
        i = 0
        extra = 2 * (tonumber(args[3]) or 64)
    else
        -- With several wrk threads (THREADS), each starts at its own random place.
        math.randomseed(os.time() + n + math.floor(os.clock() * 1e6))
        i = math.random(0, n - 1)
    end
    wrk.path = "/v1/me"
end

function request()
    if sweep and i >= n then
        return wrk.format("GET", "/v1/me", { ["x-api-key"] = keys[1] })
    end
    i = i % n + 1
    return wrk.format("GET", "/v1/me", { ["x-api-key"] = keys[i] })
end

function response(status, headers, body)
    if not sweep then return end
    answered = answered + 1
    if status ~= 200 then bad = bad + 1 end
    if answered >= n + extra then
        if bad == 0 then
            io.write(string.format("sweep: all %d keys answered 200\n", n))
        else
            io.write(string.format("sweep: %d of %d answers were not 200\n", bad, answered))
        end
        io.stdout:flush()
        os.exit(0)
    end
end
