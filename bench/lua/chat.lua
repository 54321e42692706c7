-- wrk script of bench/run: a streamed chat, POST /v1/chat with "stream": true, by one API key
-- (x-api-key). Arguments (after --): the key. Every request starts a new thread; the echo
-- upstream answers, so the load measures Gatehouse's own path (authentication, the checks
-- before upstream, the exchange's group commit, and with a budget its reserve and settle).
function init(args)
    local key = args[1]
    if not key or #key == 0 then error("chat.lua: expected the API key as argument") end
    wrk.method = "POST"
    wrk.path = "/v1/chat"
    wrk.headers["x-api-key"] = key
    wrk.headers["Content-Type"] = "application/json"
    wrk.headers["Accept"] = "text/event-stream"
    wrk.body = '{"message":"Hello from bench/run, how much does this cost?","stream":true}'
end
