"""Real-client compatibility tests: the unmodified `supabase` Python client
against a real `gatehouse serve` process over HTTP.

Run (from the repo root):
    python3 -m venv .venv
    .venv/bin/pip install -r tests/clients/python/requirements.txt
    .venv/bin/pytest tests/clients/python

Env: GATEHOUSE_BIN (default <repo>/target/debug/gatehouse),
     GATEHOUSE_CLIENT_TEST_DATABASE_URL (use PostgreSQL instead of a temp SQLite file),
     GATEHOUSE_CLIENT_TEST_TRACE=1 (print every HTTP exchange the clients make).
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest
from supabase import ClientOptions, create_client
from supabase_auth.errors import (
    AuthApiError,
    AuthError,
    AuthInvalidJwtError,
    AuthWeakPasswordError,
)

from gatehouse_proc import BIN, serve
TRACE = bool(os.environ.get("GATEHOUSE_CLIENT_TEST_TRACE"))
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
PASSWORD = "correct-horse-42"


@dataclass
class Server:
    url: str
    key: str
    proc: subprocess.Popen
    log_path: Path

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def _alnum(n: int) -> str:
    chars = string.ascii_letters + string.digits
    return "".join(secrets.choice(chars) for _ in range(n))


# Module scope: the server stops before the next module starts. test_webhooks.py starts a
# server of its own with other webhook settings, on the same database when
# GATEHOUSE_CLIENT_TEST_DATABASE_URL is set; while this one lived on (session scope), its
# delivery worker claimed some of that suite's deliveries, refused their 127.0.0.1 target
# (webhooks_allow_private is off here) and put the next retry 300 s off (default schedule).
@pytest.fixture(scope="module")
def server():
    if not BIN.exists():
        pytest.fail(f"gatehouse binary not found at {BIN} (build it or set GATEHOUSE_BIN)")
    tmp = Path(tempfile.mkdtemp(prefix="gatehouse-py-"))
    key = f"gk_publishable_test_{_alnum(24)}"
    # gatehouse rejects unknown GATEHOUSE_* variables, so the suite's own
    # control variables (GATEHOUSE_BIN, GATEHOUSE_CLIENT_TEST_*) are not passed on.
    inherited = {
        k: v
        for k, v in os.environ.items()
        if k != "GATEHOUSE_BIN" and not k.startswith("GATEHOUSE_CLIENT_TEST_")
    }
    env = {
        **inherited,
        "GATEHOUSE_DATABASE_URL": os.environ.get("GATEHOUSE_CLIENT_TEST_DATABASE_URL")
        or f"sqlite://{tmp}/gh.db",
        "GATEHOUSE_PUBLISHABLE_KEY": key,
        "GATEHOUSE_AUTOCONFIRM": "true",
        "GATEHOUSE_RATE_LIMIT_SIGN_UP": "1000/60s",
        "GATEHOUSE_RATE_LIMIT_SIGN_IN": "1000/60s",
        "GATEHOUSE_RATE_LIMIT_TOKEN_REFRESH": "1000/60s",
    }
    log_path = tmp / "server.log"
    log = open(log_path, "wb")
    proc, url = serve(env, tmp, log, log_path)
    srv = Server(url=url, key=key, proc=proc, log_path=log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"gatehouse exited with {proc.returncode} before becoming ready:\n{srv.output()}"
                )
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"gatehouse did not answer GET /healthz with 200 within 30 s:\n{srv.output()}")
            time.sleep(0.2)
        yield srv
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        if os.environ.get("GATEHOUSE_CLIENT_TEST_SHOW_SERVER_LOG"):
            sys.stderr.write(f"--- gatehouse output ---\n{srv.output()}\n")
        shutil.rmtree(tmp, ignore_errors=True)


def _trace_hook(label: str):
    def hook(response: httpx.Response) -> None:
        response.read()
        req = response.request
        auth = req.headers.get("authorization", "")
        sys.stderr.write(
            f"[{label}] {req.method} {req.url}\n"
            f"  req headers: apikey={'set' if req.headers.get('apikey') else 'none'} "
            f"authorization={'jwt' if auth.count('.') == 2 else ('key' if auth else 'none')} "
            f"x-supabase-api-version={req.headers.get('x-supabase-api-version')}\n"
            + (f"  req body: {req.content.decode(errors='replace')}\n" if req.content else "")
            + f"  -> {response.status_code} "
            f"x-supabase-api-version={response.headers.get('x-supabase-api-version')}\n"
            f"  res body: {response.text}\n"
        )

    return hook


@pytest.fixture
def new_client(server):
    made = []

    def make(label: str = "client"):
        kwargs = dict(auto_refresh_token=False, persist_session=False)
        if TRACE:
            kwargs["httpx_client"] = httpx.Client(
                follow_redirects=True, event_hooks={"response": [_trace_hook(label)]}
            )
        client = create_client(server.url, server.key, options=ClientOptions(**kwargs))
        made.append(client)
        return client

    yield make
    for c in made:
        try:
            c.auth._http_client.close()
        except Exception:
            pass


def unique_email() -> str:
    return f"user-{uuid.uuid4()}@example.com"


def err_str(e: BaseException) -> str:
    d = e.to_dict() if hasattr(e, "to_dict") else {}
    return f"{type(e).__name__}: {e} {d}"


def sign_up(new_client, **options):
    email = unique_email()
    client = new_client("signup")
    creds = {"email": email, "password": PASSWORD}
    if options:
        creds["options"] = options
    res = client.auth.sign_up(creds)
    assert res.session is not None, f"sign_up returned no session: {res}"
    return email, client, res


def sign_in(new_client, email, password=PASSWORD, label="signin"):
    client = new_client(label)
    res = client.auth.sign_in_with_password({"email": email, "password": password})
    assert res.session is not None and res.session.refresh_token
    return client, res.session


def refresh_error(new_client, refresh_token: str) -> AuthError:
    with pytest.raises(AuthError) as info:
        new_client("refresh").auth.refresh_session(refresh_token)
    return info.value


# --- sign up -----------------------------------------------------------------


def test_sign_up_returns_session_and_user(new_client):
    email = unique_email()
    client = new_client("signup")
    res = client.auth.sign_up(
        {"email": email, "password": PASSWORD, "options": {"data": {"display_name": "Ada"}}}
    )
    session, user = res.session, res.user
    assert session is not None
    assert isinstance(session.access_token, str) and session.access_token.count(".") == 2
    assert isinstance(session.refresh_token, str) and session.refresh_token
    assert session.token_type == "bearer"
    assert session.expires_in > 0
    assert session.expires_at is not None
    assert abs(session.expires_at - (time.time() + session.expires_in)) < 60
    assert user is not None
    assert user.email == email
    assert UUID_RE.match(user.id), user.id
    assert session.user.id == user.id
    assert session.user.email == email
    assert user.aud == "authenticated"
    assert user.email_confirmed_at is not None, "autoconfirm should confirm the email"
    assert user.user_metadata.get("display_name") == "Ada"
    # kept in memory by the client
    assert client.auth.get_session().access_token == session.access_token


def test_sign_up_existing_email_is_user_already_exists(new_client):
    email, _, _ = sign_up(new_client)
    with pytest.raises(AuthApiError) as info:
        new_client("dup").auth.sign_up({"email": email, "password": "another-pass-99"})
    e = info.value
    assert e.code == "user_already_exists", err_str(e)
    assert e.status == 422, err_str(e)


def test_sign_up_weak_password(new_client):
    with pytest.raises(AuthError) as info:
        new_client("weak").auth.sign_up({"email": unique_email(), "password": "abc"})
    e = info.value
    # supabase_auth.helpers.handle_exception builds AuthWeakPasswordError from
    # code "weak_password" plus body["weak_password"]["reasons"].
    assert isinstance(e, AuthWeakPasswordError), err_str(e)
    assert e.code == "weak_password"
    assert e.status == 422
    assert isinstance(e.reasons, list), err_str(e)


# --- sign in -----------------------------------------------------------------


def test_sign_in_with_password(new_client):
    email, _, up = sign_up(new_client)
    client = new_client("signin")
    res = client.auth.sign_in_with_password({"email": email, "password": PASSWORD})
    assert res.session is not None
    assert res.session.access_token and res.session.refresh_token
    assert res.session.token_type == "bearer"
    assert res.user.id == up.user.id
    assert res.user.email == email


def test_sign_in_wrong_password_and_unknown_email(new_client):
    email, _, _ = sign_up(new_client)
    with pytest.raises(AuthApiError) as wrong:
        new_client("wrongpw").auth.sign_in_with_password(
            {"email": email, "password": "not-the-password"}
        )
    assert wrong.value.code == "invalid_credentials", err_str(wrong.value)
    assert wrong.value.status == 400
    with pytest.raises(AuthApiError) as unknown:
        new_client("unknown").auth.sign_in_with_password(
            {"email": unique_email(), "password": PASSWORD}
        )
    assert unknown.value.code == "invalid_credentials", err_str(unknown.value)
    assert unknown.value.status == 400
    assert unknown.value.message == wrong.value.message
    assert wrong.value.message


# --- user --------------------------------------------------------------------


def test_get_user(new_client):
    email, _, up = sign_up(new_client)
    client, session = sign_in(new_client, email)
    res = client.auth.get_user()
    assert res is not None
    assert res.user.id == up.user.id
    assert res.user.email == email
    other = new_client("getuser-jwt").auth.get_user(session.access_token)
    assert other.user.id == up.user.id


def test_update_user_password(new_client):
    email, _, _ = sign_up(new_client)
    client, _ = sign_in(new_client, email)
    new_password = "brand-new-password-7"
    res = client.auth.update_user({"password": new_password})
    assert res.user.email == email
    ok = new_client("signin-new").auth.sign_in_with_password(
        {"email": email, "password": new_password}
    )
    assert ok.session is not None and ok.session.access_token
    with pytest.raises(AuthApiError) as old:
        new_client("signin-old").auth.sign_in_with_password({"email": email, "password": PASSWORD})
    assert old.value.code == "invalid_credentials", err_str(old.value)
    assert old.value.status == 400


def test_update_user_metadata(new_client):
    email, _, _ = sign_up(new_client)
    client, _ = sign_in(new_client, email)
    res = client.auth.update_user({"data": {"plan": "pro"}})
    assert res.user.user_metadata.get("plan") == "pro"
    again = client.auth.get_user()
    assert again.user.user_metadata.get("plan") == "pro"


# --- refresh -----------------------------------------------------------------


def test_refresh_session_rotates_tokens(new_client):
    email, _, up = sign_up(new_client)
    client, session = sign_in(new_client, email)
    res = client.auth.refresh_session()
    assert res.session is not None
    assert res.session.access_token != session.access_token
    assert res.session.refresh_token != session.refresh_token
    assert res.user.id == up.user.id
    nxt = new_client("refresh-next").auth.refresh_session(res.session.refresh_token)
    assert nxt.session.refresh_token != res.session.refresh_token


def test_concurrent_refresh_same_token_gets_same_new_token(new_client):
    email, _, _ = sign_up(new_client)
    _, session = sign_in(new_client, email)
    clients = [new_client("refresh-a"), new_client("refresh-b")]
    barrier = threading.Barrier(2)
    results: list = [None, None]

    def run(i):
        barrier.wait()
        try:
            results[i] = clients[i].auth.refresh_session(session.refresh_token)
        except Exception as e:  # noqa: BLE001 - reported below
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for r in results:
        assert not isinstance(r, BaseException), err_str(r)
        assert r is not None and r.session is not None
    a, b = results
    assert a.session.refresh_token != session.refresh_token
    assert a.session.refresh_token == b.session.refresh_token
    assert a.user.id == b.user.id

    # and two sequential refreshes within a few seconds behave the same way
    _, s2 = sign_in(new_client, email)
    first = new_client("refresh-seq-1").auth.refresh_session(s2.refresh_token)
    second = new_client("refresh-seq-2").auth.refresh_session(s2.refresh_token)
    assert first.session.refresh_token == second.session.refresh_token


# --- sign out ----------------------------------------------------------------


def test_sign_out_local(new_client):
    email, _, _ = sign_up(new_client)
    client, session = sign_in(new_client, email)
    client.auth.sign_out({"scope": "local"})
    assert client.auth.get_session() is None

    with pytest.raises(AuthError) as gu:
        new_client("getuser-after-signout").auth.get_user(session.access_token)
    # GoTrue answers 403 {code: "session_not_found"} for a JWT whose session is gone.
    assert getattr(gu.value, "code", None) == "session_not_found", err_str(gu.value)

    e = refresh_error(new_client, session.refresh_token)
    assert e.code == "refresh_token_not_found", err_str(e)


def test_sign_out_global(new_client):
    email, _, _ = sign_up(new_client)
    c1, s1 = sign_in(new_client, email, label="signin-1")
    _, s2 = sign_in(new_client, email, label="signin-2")
    assert s1.refresh_token != s2.refresh_token
    c1.auth.sign_out({"scope": "global"})
    for s in (s1, s2):
        e = refresh_error(new_client, s.refresh_token)
        assert e.code == "refresh_token_not_found", err_str(e)


def test_sign_out_others(new_client):
    email, _, _ = sign_up(new_client)
    cur, s_cur = sign_in(new_client, email, label="signin-current")
    _, s_other = sign_in(new_client, email, label="signin-other")
    cur.auth.sign_out({"scope": "others"})
    assert cur.auth.get_session().refresh_token == s_cur.refresh_token
    mine = new_client("refresh-mine").auth.refresh_session(s_cur.refresh_token)
    assert mine.session is not None and mine.session.access_token
    e = refresh_error(new_client, s_other.refresh_token)
    assert e.code == "refresh_token_not_found", err_str(e)


# --- access token ------------------------------------------------------------


def test_access_token_verifies_with_jwks(server, new_client):
    email, _, up = sign_up(new_client, data={"plan": "free"})
    _, session = sign_in(new_client, email)
    jwks_url = f"{server.url}/auth/v1/.well-known/jwks.json"

    raw = httpx.get(jwks_url, headers={"apikey": server.key})
    assert raw.status_code == 200
    keys = raw.json()["keys"]
    assert keys
    for k in keys:
        assert "d" not in k, "JWKS must not publish private key material"
        assert k.get("kid")

    header = jwt.get_unverified_header(session.access_token)
    assert header["alg"] == "ES256"
    assert isinstance(header.get("kid"), str) and header["kid"]
    match = [k for k in keys if k["kid"] == header["kid"]]
    assert match, f"kid {header['kid']} not in JWKS"
    assert match[0]["kty"] == "EC" and match[0]["crv"] == "P-256"

    jwks_client = jwt.PyJWKClient(jwks_url, headers={"apikey": server.key})
    signing_key = jwks_client.get_signing_key_from_jwt(session.access_token)
    claims = jwt.decode(
        session.access_token,
        signing_key.key,
        algorithms=["ES256"],
        audience="authenticated",
        options={"require": ["exp", "iat", "sub", "iss", "aud"]},
    )
    now = time.time()
    assert isinstance(claims["iss"], str) and claims["iss"].startswith(server.url), claims["iss"]
    assert claims["sub"] == up.user.id
    aud = claims["aud"]
    assert aud == "authenticated" or (isinstance(aud, list) and "authenticated" in aud)
    assert claims["exp"] > now
    assert now - 120 < claims["iat"] <= now + 5
    assert abs(claims["exp"] - session.expires_at) <= 2
    assert claims["email"] == email
    assert claims["role"] == "authenticated"
    assert claims["aal"] == "aal1"
    assert isinstance(claims["amr"], list) and claims["amr"], claims.get("amr")
    assert claims["amr"][0]["method"] == "password"
    assert UUID_RE.match(claims["session_id"]), claims.get("session_id")
    assert claims["is_anonymous"] is False
    assert isinstance(claims["app_metadata"], dict)
    assert claims["app_metadata"].get("provider") == "email"
    assert isinstance(claims["user_metadata"], dict)
    assert claims["user_metadata"].get("plan") == "free"

    # a forged signature does not verify
    h, p, _ = session.access_token.split(".")
    forged = f"{h}.{p}." + base64.urlsafe_b64encode(secrets.token_bytes(64)).rstrip(b"=").decode()
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(forged, signing_key.key, algorithms=["ES256"], audience="authenticated")
    # ... and, what matters, the server refuses it: GoTrue's 403 bad_jwt on /auth/v1/user, the
    # envelope's 401 (reason malformed) on /v1/me, while the untouched token is accepted there.
    user = httpx.get(
        f"{server.url}/auth/v1/user",
        headers={"apikey": server.key, "authorization": f"Bearer {forged}",
                 "x-supabase-api-version": "2024-01-01"},
    )
    assert user.status_code == 403, user.text
    assert user.json()["code"] == "bad_jwt"
    me = httpx.get(f"{server.url}/v1/me", headers={"authorization": f"Bearer {forged}"})
    assert me.status_code == 401, me.text
    assert me.json()["error"]["code"] == "unauthorized"
    assert me.json()["error"]["details"]["reason"] == "malformed"
    ok = httpx.get(f"{server.url}/v1/me", headers={"authorization": f"Bearer {session.access_token}"})
    assert ok.status_code == 200, ok.text


def test_get_claims(new_client):
    email, _, up = sign_up(new_client)
    client, session = sign_in(new_client, email)
    res = new_client("getclaims").auth.get_claims(session.access_token)
    assert res is not None
    # ClaimsResponse is a TypedDict
    assert res["claims"]["sub"] == up.user.id
    assert res["claims"]["email"] == email
    assert res["headers"]["alg"] == "ES256"
    own = client.auth.get_claims()
    assert own["claims"]["session_id"] == res["claims"]["session_id"]
    h, p, _ = session.access_token.split(".")
    forged = f"{h}.{p}." + base64.urlsafe_b64encode(secrets.token_bytes(64)).rstrip(b"=").decode()
    with pytest.raises(AuthInvalidJwtError):
        new_client("getclaims-forged").auth.get_claims(forged)
    # get_claims verified that locally with the JWKS; the server refuses it too (get_user asks it).
    with pytest.raises(AuthApiError) as refused:
        new_client("getuser-forged").auth.get_user(forged)
    assert refused.value.status == 403
    assert refused.value.code == "bad_jwt"
