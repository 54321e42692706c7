-- wrk script of bench/run (BENCH_SCALE=1): GET /v1/me with an API key in x-api-key, each
-- request with the next key of a file (one key a line), cycling, so that the load is spread
-- evenly over every key of the file. Argument (after --): the file.
local keys = {}
local n = 0
local i = 0

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
    math.randomseed(os.time() + n + math.floor(os.clock() * 1e6))
    i = math.random(0, n - 1)
    wrk.path = "/v1/me"
end

function request()
    i = i % n + 1
    return wrk.format("GET", "/v1/me", { ["x-api-key"] = keys[i] })
end
