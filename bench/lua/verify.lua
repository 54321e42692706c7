-- wrk script of bench/run: POST /v1/keys/verify with a verifier key in x-api-key, checking a
-- key that has credits, at cost 1 (each request spends one credit of the checked key).
-- Arguments (after --): the verifier key, the checked key.
function init(args)
    wrk.method = "POST"
    wrk.headers["x-api-key"] = args[1]
    wrk.headers["Content-Type"] = "application/json"
    wrk.body = '{"key":"' .. args[2] .. '","cost":1}'
end
