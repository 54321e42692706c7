"""Anonymous sign-in with the unmodified `supabase` Python client against a real
`gatehouse serve` with GATEHOUSE_ANONYMOUS_SIGN_INS on: sign_in_anonymously, is_anonymous in
the user and the token, a refresh that keeps it, and a password alone refused.

Run (from the repo root):
    .venv/bin/pytest tests/clients/python/test_anonymous.py
"""

from __future__ import annotations

import base64
import json

import pytest
from supabase import ClientOptions, create_client
from supabase_auth.errors import AuthApiError

from gatehouse_proc import running

PK = "gk_publishable_test_anonymous_python_0123"


@pytest.fixture(scope="module")
def base():
    with running(
        "anonymous",
        {"GATEHOUSE_PUBLISHABLE_KEY": PK, "GATEHOUSE_ANONYMOUS_SIGN_INS": "true"},
    ) as server:
        yield server.url


def new_client(base: str):
    return create_client(
        base, PK, options=ClientOptions(auto_refresh_token=False, persist_session=False)
    )


def claims(jwt: str) -> dict:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_sign_in_anonymously_is_an_anonymous_user_until_converted(base):
    client = new_client(base)
    res = client.auth.sign_in_anonymously({"options": {"data": {"theme": "dark"}}})
    assert res.session is not None
    assert res.user.is_anonymous is True
    assert res.user.user_metadata == {"theme": "dark"}
    c = claims(res.session.access_token)
    assert c["is_anonymous"] is True
    assert c["amr"][0]["method"] == "anonymous"
    got = client.auth.get_user()
    assert got.user.id == res.user.id
    assert got.user.is_anonymous is True
    refreshed = client.auth.refresh_session()
    assert claims(refreshed.session.access_token)["is_anonymous"] is True
    assert refreshed.user.id == res.user.id
    with pytest.raises(AuthApiError) as refused:
        client.auth.update_user({"password": "an anonymous password 7"})
    assert refused.value.status == 422
    assert refused.value.code == "validation_failed"
    # With an address, the change is asked for; the user stays anonymous until it is confirmed.
    asked = client.auth.update_user({"email": "python-anon@example.com"})
    assert asked.user.new_email == "python-anon@example.com"
    assert asked.user.is_anonymous is True
