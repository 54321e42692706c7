-- wrk script of bench/run (BENCH_SCALE=1): GET /v1/me with an API key in x-api-key, each
-- request with the next key of a file (one key a line), cycling, so that the load is spread
-- evenly over every key of the file. Arguments (after --): the file, and optionally "sweep":
-- then every key is sent once, from the first, and the thread stops sending after as many
-- answers as there are keys (bench/run runs it before the warm run, so that the warm run
-- finds every key cached; wrk itself still runs for its -d).
local keys = {}
local n = 0
local i = 0
local sweep = false
local answered = 0

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
    -- With several wrk threads (THREADS), each starts at its own random place.
    sweep = args[2] == "sweep"
    if sweep then
        i = 0
    else
        math.randomseed(os.time() + n + math.floor(os.clock() * 1e6))
        i = math.random(0, n - 1)
    end
    wrk.path = "/v1/me"
end

function request()
    i = i % n + 1
    return wrk.format("GET", "/v1/me", { ["x-api-key"] = keys[i] })
end

function response(status, headers, body)
    if sweep then
        answered = answered + 1
        if answered >= n then
            wrk.thread:stop()
        end
    end
end
