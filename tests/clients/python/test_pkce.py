"""PKCE through the unmodified `supabase` Python client (flow_type "pkce") against a real
`gatehouse serve`: the emailed link (received by a small SMTP sink here) lands with ?code=,
which exchange_code_for_session trades, once, for a session with the verifier the client
kept in its storage.

Run as test_supabase.py says (same venv and requirements).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socketserver
import string
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from supabase import ClientOptions, create_client
from supabase_auth.errors import AuthApiError

from gatehouse_proc import BIN, serve

PASSWORD = "correct-horse-42"


def _alnum(n: int) -> str:
    chars = string.ascii_letters + string.digits
    return "".join(secrets.choice(chars) for _ in range(n))


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP for the server's mailer: every mail is kept as (recipients, text)."""

    def handle(self):
        self.wfile.write(b"220 sink ESMTP ready\r\n")
        rcpt, data, in_data = [], [], False
        for raw in self.rfile:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if in_data:
                if line == ".":
                    in_data = False
                    self.server.mails.append((rcpt, "\r\n".join(data)))
                    self.wfile.write(b"250 OK queued\r\n")
                else:
                    data.append(line[1:] if line.startswith(".") else line)
                continue
            up = line.upper()
            if up.startswith("EHLO"):
                self.wfile.write(b"250-sink\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
            elif up.startswith("MAIL FROM"):
                rcpt = []
                self.wfile.write(b"250 OK\r\n")
            elif up.startswith("RCPT TO"):
                rcpt.append(line[8:].strip().lstrip("<").split(">")[0])
                self.wfile.write(b"250 OK\r\n")
            elif up == "DATA":
                in_data, data = True, []
                self.wfile.write(b"354 go ahead\r\n")
            elif up == "QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 OK\r\n")


class _Sink(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _SmtpHandler)
        self.mails: list[tuple[list[str], str]] = []


@pytest.fixture(scope="module")
def server():
    if not BIN.exists():
        pytest.fail(f"gatehouse binary not found at {BIN} (build it or set GATEHOUSE_BIN)")
    tmp = Path(tempfile.mkdtemp(prefix="gatehouse-py-pkce-"))
    sink = _Sink()
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    key = f"gk_publishable_test_{_alnum(24)}"
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
        "GATEHOUSE_AUTOCONFIRM": "false",
        "GATEHOUSE_SMTP_URL": f"smtp://127.0.0.1:{sink.server_address[1]}",
        "GATEHOUSE_MAIL_MIN_INTERVAL_SECONDS": "0",
        "GATEHOUSE_REDIRECT_ALLOWLIST": "http://localhost:3000/**",
        "GATEHOUSE_RATE_LIMIT_SIGN_UP": "1000/60s",
        "GATEHOUSE_RATE_LIMIT_SIGN_IN": "1000/60s",
        "GATEHOUSE_RATE_LIMIT_MAGIC_LINK": "1000/60s",
        "GATEHOUSE_RATE_LIMIT_VERIFY": "1000/60s",
    }
    log_path = tmp / "server.log"
    log = open(log_path, "wb")
    proc, url = serve(env, tmp, log, log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"gatehouse exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"gatehouse did not become ready:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield {"url": url, "key": key, "sink": sink}
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        sink.shutdown()
        sink.server_close()
        shutil.rmtree(tmp, ignore_errors=True)


def pkce_client(server):
    return create_client(
        server["url"],
        server["key"],
        options=ClientOptions(flow_type="pkce", auto_refresh_token=False, persist_session=True),
    )


def links_to(server, email: str, n: int, within: float = 10.0) -> list[str]:
    """The verify links of the first `n` mails to `email`, oldest first."""
    deadline = time.monotonic() + within
    while True:
        found = []
        for rcpt, data in list(server["sink"].mails):
            if email in rcpt:
                text = data.replace("=\r\n", "").replace("=3D", "=")
                m = re.search(r"https?://[^\s\"<]*/auth/v1/verify\?[^\s\"<]*", text)
                if m:
                    found.append(m.group(0).replace("&amp;", "&"))
        if len(found) >= n:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{n} mails to {email} did not arrive; got {len(found)}")
        time.sleep(0.1)


def follow(link: str) -> dict:
    res = httpx.get(link, follow_redirects=False)
    assert res.status_code == 303, res.status_code
    loc = urlparse(res.headers["location"])
    return {k: v[0] for k, v in parse_qs(loc.query).items()} | {"_fragment": loc.fragment}


def fresh() -> str:
    return f"pkce-{uuid.uuid4().hex}@example.com"


def test_sign_in_with_otp_then_exchange_code_for_session(server):
    email = fresh()
    client = pkce_client(server)
    client.auth.sign_in_with_otp({"email": email})
    [link] = links_to(server, email, 1)
    assert "token=pkce_" in link
    landed = follow(link)
    assert "code" in landed, landed
    assert "access_token" not in landed["_fragment"]
    res = client.auth.exchange_code_for_session({"auth_code": landed["code"]})
    assert res.session is not None
    assert res.user.email == email
    assert client.auth.get_user().user.email == email
    # The code works once.
    with pytest.raises(AuthApiError) as e:
        client.auth.exchange_code_for_session(
            {"auth_code": landed["code"], "code_verifier": "x" * 43, "redirect_to": ""}
        )
    assert e.value.code == "flow_state_not_found"


def test_a_wrong_verifier_is_refused(server):
    email = fresh()
    client = pkce_client(server)
    client.auth.sign_in_with_otp({"email": email})
    [link] = links_to(server, email, 1)
    code = follow(link)["code"]
    with pytest.raises(AuthApiError) as e:
        client.auth.exchange_code_for_session(
            {"auth_code": code, "code_verifier": _alnum(64), "redirect_to": ""}
        )
    assert e.value.code == "bad_code_verifier"


def test_sign_up_and_recovery_land_with_codes(server):
    email = fresh()
    client = pkce_client(server)
    res = client.auth.sign_up({"email": email, "password": PASSWORD})
    assert res.session is None
    [confirm] = links_to(server, email, 1)
    session = client.auth.exchange_code_for_session({"auth_code": follow(confirm)["code"]})
    assert session.user.email_confirmed_at is not None

    other = pkce_client(server)
    other.auth.reset_password_for_email(email, {"redirect_to": "http://localhost:3000/reset"})
    recovery = links_to(server, email, 2)[1]
    landed = follow(recovery)
    res = other.auth.exchange_code_for_session({"auth_code": landed["code"]})
    assert res.user.email == email
    other.auth.update_user({"password": "another-good-pw-9"})
    fresh_client = pkce_client(server)
    signed = fresh_client.auth.sign_in_with_password({"email": email, "password": "another-good-pw-9"})
    assert signed.session is not None
