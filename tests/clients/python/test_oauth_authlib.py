"""Gatehouse as an OAuth 2.1 authorization server, driven by `authlib` (unmodified, its httpx
OAuth2Client) from the discovery documents alone, against a real `gatehouse serve` process.

The client starts from one refused call to /v1 (its WWW-Authenticate names the protected
resource metadata), reads the authorization server's metadata from there, registers itself
(RFC 7591), and runs the code flow with PKCE S256. The person's part (sign in, consent) is
done over plain HTTP the way the dashboard does it: POST /v1/session for the cookie, then the
consent API. Then /v1/me answers for the client, the refresh token is rotated, and a wrong
PKCE verifier is refused with invalid_grant.

Run (from the repo root), after `cargo build`:
    .venv/bin/pytest tests/clients/python/test_oauth_authlib.py
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from authlib.common.security import generate_token
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import OAuth2Client

from gatehouse_proc import running

PK = "gk_publishable_oauth_authlib_test"
PASSWORD = "correct-horse-42"
# A native app's loopback redirect URI (RFC 8252): nothing needs to listen, the code is read
# from the Location the consent answers with.
REDIRECT = "http://127.0.0.1:53682/callback"


@pytest.fixture(scope="module")
def base():
    with running(
        "oauth",
        {
            "GATEHOUSE_PUBLISHABLE_KEY": PK,
            "GATEHOUSE_RATE_LIMIT_SIGN_UP": "1000/60s",
            "GATEHOUSE_RATE_LIMIT_SIGN_IN": "1000/60s",
        },
    ) as server:
        yield server.url


def data(res: httpx.Response):
    """The answer's data: the /v1 envelope's, or the plain JSON of the /oauth routes."""
    assert res.status_code < 400, f"{res.request.method} {res.request.url} -> {res.status_code}: {res.text}"
    body = res.json()
    if isinstance(body, dict) and body.get("success") is True and "data" in body:
        return body["data"]
    return body


@pytest.fixture(scope="module")
def person(base):
    """A person with an organization, and their dashboard session (an httpx client holding
    the cookie, sending the dashboard's Origin)."""
    email = f"authlib-{uuid.uuid4()}@example.com"
    data(httpx.post(f"{base}/auth/v1/signup", headers={"apikey": PK},
                    json={"email": email, "password": PASSWORD}))
    web = httpx.Client(base_url=base, headers={"origin": base}, follow_redirects=False)
    data(web.post("/v1/session", json={"email": email, "password": PASSWORD}))
    org = data(web.post("/v1/orgs", json={"name": "Authlib Works"}))
    me = data(web.get("/v1/me"))
    yield {"email": email, "web": web, "org": org, "user_id": me["user_id"]}
    web.close()


@pytest.fixture(scope="module")
def discovered(base):
    """Everything from one refused call: the challenge, the resource's metadata, the
    authorization server's metadata."""
    refused = httpx.get(f"{base}/v1/me")
    assert refused.status_code == 401
    challenge = refused.headers["www-authenticate"]
    m = re.fullmatch(r'Bearer resource_metadata="([^"]+)"', challenge)
    assert m, challenge
    prm = data(httpx.get(m.group(1)))
    assert prm["resource"] == f"{base}/v1"
    issuer = prm["authorization_servers"][0]
    asm = data(httpx.get(f"{issuer.rstrip('/')}/.well-known/oauth-authorization-server"))
    assert asm["issuer"] == issuer
    assert "S256" in asm["code_challenge_methods_supported"]
    return {"resource": prm["resource"], "as": asm}


@pytest.fixture(scope="module")
def registered(discovered):
    reg = httpx.post(discovered["as"]["registration_endpoint"], json={
        "client_name": "Authlib Probe",
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
    assert reg.status_code == 201, reg.text
    return reg.json()


def consent(person, authorization_url: str) -> dict:
    """The person's part, as the dashboard does it: the authorize URL sends a signed-in person
    to the consent page; the consent API approves for the person's organization. Answers the
    redirect's query (code, state)."""
    web = person["web"]
    res = web.get(authorization_url)
    assert res.status_code in (302, 303), res.text
    location = res.headers["location"]
    if location.startswith(REDIRECT):  # consent remembered: straight back with a code
        return {k: v[0] for k, v in parse_qs(urlparse(location).query).items()}
    frag = urlparse(location).fragment
    assert frag.startswith("/oauth/consent?"), location
    request_id = parse_qs(frag.split("?", 1)[1])["request"][0]
    req = data(web.get(f"/oauth/requests/{request_id}"))
    assert req["client"]["name"] == "Authlib Probe"
    assert person["org"]["id"] in [o["id"] for o in req["orgs"]]
    answer = data(web.post(f"/oauth/requests/{request_id}",
                           json={"decision": "approve", "org_id": person["org"]["id"]}))
    redirect_to = answer["redirect_to"]
    assert redirect_to.startswith(REDIRECT), redirect_to
    return {k: v[0] for k, v in parse_qs(urlparse(redirect_to).query).items()}


def authlib_client(discovered, registered) -> OAuth2Client:
    return OAuth2Client(
        client_id=registered["client_id"],
        redirect_uri=REDIRECT,
        scope="openid offline_access keys:read members:read",
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
    )


def test_code_flow_with_pkce_from_discovery_then_me_then_refresh(base, person, discovered, registered):
    asm = discovered["as"]
    client = authlib_client(discovered, registered)
    verifier = generate_token(48)
    url, state = client.create_authorization_url(
        asm["authorization_endpoint"], code_verifier=verifier, resource=discovered["resource"])
    assert "code_challenge=" in url and "code_challenge_method=S256" in url
    got = consent(person, url)
    assert got["state"] == state
    token = client.fetch_token(asm["token_endpoint"], code=got["code"], code_verifier=verifier,
                               resource=discovered["resource"])
    assert token["token_type"].lower() == "bearer"
    assert token.get("refresh_token"), "offline_access gives a refresh token"

    me = data(client.get(f"{base}/v1/me"))
    assert me["kind"] == "oauth_client"
    assert me["client_id"] == registered["client_id"]
    assert me["org_id"] == person["org"]["id"]
    assert me["user_id"] == person["user_id"]
    assert "keys:read" in me["scopes"]
    # Scopes are enforced like a key's: members:read was granted and is held (an owner).
    org = person["org"]["id"]
    assert client.get(f"{base}/v1/orgs/{org}/members").status_code == 200
    # ... and a permission the token does not carry is refused.
    refused = client.get(f"{base}/v1/orgs/{org}/webhooks")
    assert refused.status_code == 403, refused.text

    old_access, old_refresh = token["access_token"], token["refresh_token"]
    new = client.refresh_token(asm["token_endpoint"], refresh_token=old_refresh,
                               resource=discovered["resource"])
    assert new["access_token"] != old_access
    assert new["refresh_token"] != old_refresh, "rotated"
    assert data(client.get(f"{base}/v1/me"))["kind"] == "oauth_client"


def test_a_wrong_pkce_verifier_is_invalid_grant(person, discovered, registered):
    asm = discovered["as"]
    client = authlib_client(discovered, registered)
    verifier = generate_token(48)
    url, _ = client.create_authorization_url(
        asm["authorization_endpoint"], code_verifier=verifier, resource=discovered["resource"])
    got = consent(person, url)
    with pytest.raises(OAuthError) as refused:
        client.fetch_token(asm["token_endpoint"], code=got["code"],
                           code_verifier=generate_token(48), resource=discovered["resource"])
    assert refused.value.error == "invalid_grant"


def test_a_token_for_v1_is_refused_at_the_api_proxy_resource(base, person, discovered, registered):
    asm = discovered["as"]
    client = authlib_client(discovered, registered)
    verifier = generate_token(48)
    url, _ = client.create_authorization_url(
        asm["authorization_endpoint"], code_verifier=verifier, resource=discovered["resource"])
    got = consent(person, url)
    client.fetch_token(asm["token_endpoint"], code=got["code"], code_verifier=verifier,
                       resource=discovered["resource"])
    res = client.get(f"{base}/api/anything")
    assert res.status_code == 401
    assert 'error="invalid_token"' in res.headers["www-authenticate"]
    assert "oauth-protected-resource/api" in res.headers["www-authenticate"]
