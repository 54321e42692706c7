"""Multi-factor authentication (TOTP) with the unmodified `supabase` Python client against a
real `gatehouse serve`: enrol, challenge, verify with codes computed by pyotp, the assurance
level, replay refused, unenrol.

Run (from the repo root):
    .venv/bin/pytest tests/clients/python/test_mfa.py
"""

from __future__ import annotations

import base64
import json
import uuid

import pyotp
import pytest
from supabase import ClientOptions, create_client
from supabase_auth.errors import AuthApiError

from gatehouse_proc import running

PK = "gk_publishable_test_mfa_python_0123456789"
PASSWORD = "correct-horse-42"


@pytest.fixture(scope="module")
def base():
    with running(
        "mfa",
        {
            "GATEHOUSE_PUBLISHABLE_KEY": PK,
            "GATEHOUSE_MFA_ENCRYPTION_KEY": "a python-test key of at least 32 characters",
        },
    ) as server:
        yield server.url


def new_client(base: str):
    return create_client(
        base, PK, options=ClientOptions(auto_refresh_token=False, persist_session=False)
    )


def claims(jwt: str) -> dict:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def signed_up(base: str):
    email = f"mfa-{uuid.uuid4().hex}@example.com"
    client = new_client(base)
    res = client.auth.sign_up({"email": email, "password": PASSWORD})
    assert res.session is not None
    return email, client


def test_totp_enrol_verify_aal_replay_and_unenrol(base):
    email, client = signed_up(base)
    aal = client.auth.mfa.get_authenticator_assurance_level()
    assert (aal.current_level, aal.next_level) == ("aal1", "aal1")

    enrolled = client.auth.mfa.enroll({"factor_type": "totp", "friendly_name": "phone"})
    assert enrolled.type == "totp"
    assert enrolled.friendly_name == "phone"
    assert enrolled.totp.qr_code.startswith("data:image/svg+xml;utf-8,")
    assert "<svg" in enrolled.totp.qr_code
    parsed = pyotp.parse_uri(enrolled.totp.uri)
    assert parsed.secret == enrolled.totp.secret
    assert parsed.name == email
    totp = pyotp.TOTP(enrolled.totp.secret)

    factors = client.auth.mfa.list_factors()
    assert [f.status for f in factors.all] == ["unverified"]

    challenge = client.auth.mfa.challenge({"factor_id": enrolled.id})
    code = totp.now()
    verified = client.auth.mfa.verify(
        {"factor_id": enrolled.id, "challenge_id": challenge.id, "code": code}
    )
    c = claims(verified.access_token)
    assert c["aal"] == "aal2"
    assert [a["method"] for a in c["amr"]] == ["totp", "password"]
    aal = client.auth.mfa.get_authenticator_assurance_level()
    assert (aal.current_level, aal.next_level) == ("aal2", "aal2")
    assert [f.status for f in client.auth.mfa.list_factors().totp] == ["verified"]

    # The same code on a new challenge is a replay.
    again = client.auth.mfa.challenge({"factor_id": enrolled.id})
    with pytest.raises(AuthApiError) as replay:
        client.auth.mfa.verify(
            {"factor_id": enrolled.id, "challenge_id": again.id, "code": code}
        )
    assert replay.value.code == "mfa_verification_failed"
    assert replay.value.status == 422

    # A new password sign-in is aal1 and may not remove the verified factor.
    other = new_client(base)
    other.auth.sign_in_with_password({"email": email, "password": PASSWORD})
    aal = other.auth.mfa.get_authenticator_assurance_level()
    assert (aal.current_level, aal.next_level) == ("aal1", "aal2")
    with pytest.raises(AuthApiError) as weak:
        other.auth.mfa.unenroll({"factor_id": enrolled.id})
    assert weak.value.code == "insufficient_aal"

    gone = client.auth.mfa.unenroll({"factor_id": enrolled.id})
    assert gone.id == enrolled.id
    assert client.auth.mfa.list_factors().all == []


def test_a_wrong_code_is_refused(base):
    _, client = signed_up(base)
    enrolled = client.auth.mfa.enroll({"factor_type": "totp"})
    right = pyotp.TOTP(enrolled.totp.secret).now()
    wrong = "111111" if right == "000000" else "000000"
    challenge = client.auth.mfa.challenge({"factor_id": enrolled.id})
    with pytest.raises(AuthApiError) as refused:
        client.auth.mfa.verify(
            {"factor_id": enrolled.id, "challenge_id": challenge.id, "code": wrong}
        )
    assert refused.value.code == "mfa_verification_failed"
    ok = client.auth.mfa.challenge_and_verify({"factor_id": enrolled.id, "code": right})
    assert claims(ok.access_token)["aal"] == "aal2"
