-- wrk script of bench/run: password sign-in, POST /auth/v1/token?grant_type=password.
-- Arguments (after --): email, password, publishable key. Every request is the same valid
-- sign-in; bench/run raises GATEHOUSE_RATE_LIMIT_SIGN_IN so none is refused.
function init(args)
    local email, password, apikey = args[1], args[2], args[3]
    if not (email and password and apikey) then
        error("signin.lua: expected email, password and publishable key as arguments")
    end
    wrk.method = "POST"
    wrk.path = "/auth/v1/token?grant_type=password"
    wrk.headers["apikey"] = apikey
    wrk.headers["Content-Type"] = "application/json"
    wrk.body = string.format('{"email":"%s","password":"%s"}', email, password)
end
