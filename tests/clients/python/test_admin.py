"""`supabase.auth.admin` through the unmodified Python client, created with a service key
minted by `gatehouse service-key` (never the publishable key)."""

from __future__ import annotations

import secrets
import string
import subprocess
import uuid

import pytest
from supabase import ClientOptions, create_client
from supabase_auth.errors import AuthApiError

from gatehouse_proc import BIN, running

PASSWORD = "correct-horse-42"


def _alnum(n: int) -> str:
    chars = string.ascii_letters + string.digits
    return "".join(secrets.choice(chars) for _ in range(n))


@pytest.fixture(scope="module")
def server():
    key = f"gk_publishable_test_{_alnum(24)}"
    with running(
        "py-admin",
        {
            "GATEHOUSE_PUBLISHABLE_KEY": key,
            "GATEHOUSE_RATE_LIMIT_SIGN_UP": "1000/60s",
            "GATEHOUSE_RATE_LIMIT_SIGN_IN": "1000/60s",
        },
    ) as running_server:
        minted = subprocess.run(
            [str(BIN), "service-key", "--days", "1"],
            env=running_server.env,
            cwd=running_server.tmp,
            capture_output=True,
            text=True,
            check=True,
        )
        yield {"url": running_server.url, "key": key, "service_key": minted.stdout.strip()}


def _client(server, key):
    return create_client(
        server["url"], key, options=ClientOptions(auto_refresh_token=False, persist_session=False)
    )


def _email() -> str:
    return f"py-admin-{uuid.uuid4()}@example.com"


def test_the_publishable_key_is_not_an_admin_key(server):
    with pytest.raises(AuthApiError) as refused:
        _client(server, server["key"]).auth.admin.list_users()
    assert refused.value.status == 403
    assert refused.value.code == "not_admin"


def test_admin_creates_reads_pages_bans_and_deletes(server):
    admin = _client(server, server["service_key"]).auth.admin
    emails = [_email(), _email()]
    ids = []
    for email in emails:
        made = admin.create_user(
            {"email": email, "password": PASSWORD, "email_confirm": True, "user_metadata": {"n": 1}}
        )
        assert made.user.email == email
        assert made.user.email_confirmed_at is not None
        ids.append(made.user.id)
    assert admin.get_user_by_id(ids[0]).user.email == emails[0]
    page = admin.list_users(page=1, per_page=1)
    assert [u.id for u in page] == [ids[1]]

    user = _client(server, server["key"])
    assert user.auth.sign_in_with_password({"email": emails[0], "password": PASSWORD}).session
    banned = admin.update_user_by_id(ids[0], {"ban_duration": "2h"})
    assert banned.user.banned_until is not None
    with pytest.raises(AuthApiError) as refused:
        _client(server, server["key"]).auth.sign_in_with_password(
            {"email": emails[0], "password": PASSWORD}
        )
    assert refused.value.code == "user_banned"
    admin.update_user_by_id(ids[0], {"ban_duration": "none"})
    assert _client(server, server["key"]).auth.sign_in_with_password(
        {"email": emails[0], "password": PASSWORD}
    ).session

    admin.delete_user(ids[1])
    with pytest.raises(AuthApiError) as gone:
        admin.get_user_by_id(ids[1])
    assert gone.value.status == 404


def test_generate_link_and_invite(server):
    admin = _client(server, server["service_key"]).auth.admin
    email = _email()
    admin.create_user({"email": email, "password": PASSWORD, "email_confirm": True})
    link = admin.generate_link({"type": "magiclink", "email": email})
    assert link.properties.verification_type == "magiclink"
    assert len(link.properties.email_otp) == 6
    assert link.user.email == email
    verified = _client(server, server["key"]).auth.verify_otp(
        {"type": "magiclink", "token_hash": link.properties.hashed_token}
    )
    assert verified.user.email == email

    invited = _email()
    inv = admin.invite_user_by_email(invited, {"data": {"team": "blue"}})
    assert inv.user.email == invited
    assert inv.user.email_confirmed_at is None
