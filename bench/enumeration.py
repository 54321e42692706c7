#!/usr/bin/env python3
"""Does a route take longer for an address that has an account than for one that has not?

Starts `gatehouse serve` on a fresh SQLite database (mail to a closed SMTP port), creates
accounts, then sends interleaved requests for known and unknown addresses to each route that
must not reveal who has an account: POST /auth/v1/recover, /auth/v1/otp with create_user false,
/auth/v1/magiclink, /auth/v1/signup (confirmation on), PUT /auth/v1/user {email} (an address
of another account against a free one) and a password sign-in that fails (a wrong password for
an account against an address with none). It prints the median time of each side and fails
(exit 1) when a known address's median exceeds the unknown one's by more than the tolerance.

Standard library only. Env: GATEHOUSE_BIN (default target/release/gatehouse, built when
missing), ENUM_SAMPLES (pairs per route, default 300), ENUM_SIGN_IN_SAMPLES (pairs for the
sign-in, which hashes a password each time, default 100), ENUM_TOLERANCE (relative, default 0.15)
and ENUM_SLACK_MS (absolute, default 0.25).
"""

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.abspath(os.environ.get("GATEHOUSE_BIN", os.path.join(REPO, "target", "release", "gatehouse")))
SAMPLES = int(os.environ.get("ENUM_SAMPLES", "300"))
SIGN_IN_SAMPLES = int(os.environ.get("ENUM_SIGN_IN_SAMPLES", "100"))
TOLERANCE = float(os.environ.get("ENUM_TOLERANCE", "0.15"))
SLACK_MS = float(os.environ.get("ENUM_SLACK_MS", "0.25"))
KEY = "gk_publishable_enumeration_bench"
PASSWORD = "a bench password of 2026"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, body, token=None):
    """Sends one request; returns (seconds, status)."""
    data = json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("apikey", KEY)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", "Bearer " + token)
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req) as res:
            res.read()
            status = res.status
    except urllib.error.HTTPError as e:
        e.read()
        status = e.code
    return time.perf_counter() - t0, status


def fresh():
    return f"nobody-{uuid.uuid4().hex}@example.com"


def main():
    if not os.path.exists(BIN):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    tmp = tempfile.mkdtemp(prefix="gatehouse-enum-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    many = "1000000/60s"
    # gatehouse refuses unknown GATEHOUSE_* variables: start from none of the caller's.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    env.update(
        GATEHOUSE_LISTEN=f"127.0.0.1:{port}",
        GATEHOUSE_DATABASE_URL=f"sqlite://{tmp}/gh.db",
        GATEHOUSE_PUBLIC_URL=base,
        GATEHOUSE_PUBLISHABLE_KEY=KEY,
        # Confirmation on, so sign-up mails too; nothing listens there: each mail is tried
        # (connection refused) and retried, as much work for a known address as a real send.
        GATEHOUSE_SMTP_URL=f"smtp://127.0.0.1:{free_port()}",
        GATEHOUSE_AUTOCONFIRM="false",
        GATEHOUSE_MAIL_MIN_INTERVAL_SECONDS="0",
        GATEHOUSE_RATE_LIMIT_MAGIC_LINK=many,
        GATEHOUSE_RATE_LIMIT_SIGN_UP=many,
        GATEHOUSE_RATE_LIMIT_SIGN_IN=many,
        GATEHOUSE_RATE_LIMIT_AUTH_FAILURES=many,
        GATEHOUSE_LOG="warn",
    )
    known = [f"known-{uuid.uuid4().hex}@example.com" for _ in range(4)]
    for email in known:
        subprocess.run([BIN, "user", "create", "--create", "--email", email, "--password", PASSWORD],
                       cwd=tmp, env=env, check=True, capture_output=True)
    server = subprocess.Popen([BIN, "serve"], cwd=tmp, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/healthz").read()
                break
            except OSError:
                time.sleep(0.1)
        else:
            sys.exit("gatehouse did not start")
        req = urllib.request.Request(base + "/auth/v1/token?grant_type=password",
                                     data=json.dumps({"email": known[0], "password": PASSWORD}).encode(),
                                     method="POST")
        req.add_header("apikey", KEY)
        req.add_header("content-type", "application/json")
        token = json.loads(urllib.request.urlopen(req).read())["access_token"]

        # (name, request for an address, expected status, pairs)
        routes = [
            ("POST /auth/v1/recover", lambda e: ("POST", "/auth/v1/recover", {"email": e}, None),
             200, SAMPLES),
            ("POST /auth/v1/otp (create_user false)",
             lambda e: ("POST", "/auth/v1/otp", {"email": e, "create_user": False}, None),
             200, SAMPLES),
            ("POST /auth/v1/magiclink", lambda e: ("POST", "/auth/v1/magiclink", {"email": e}, None),
             200, SAMPLES),
            ("POST /auth/v1/signup",
             lambda e: ("POST", "/auth/v1/signup", {"email": e, "password": PASSWORD}, None),
             200, SAMPLES),
            ("PUT /auth/v1/user {email}", lambda e: ("PUT", "/auth/v1/user", {"email": e}, token),
             200, SAMPLES),
            # A failed sign-in: the known address with a wrong password hashes it against the
            # account's hash; the unknown one must cost the same (a dummy hash).
            ("POST /auth/v1/token (password, fails)",
             lambda e: ("POST", "/auth/v1/token?grant_type=password",
                        {"email": e, "password": "not the password of 2026"}, None),
             400, SIGN_IN_SAMPLES),
        ]
        failed = False
        print(f"{'route':42} {'known ms':>9} {'unknown ms':>11} {'ratio':>6}  verdict")
        for name, make, expected, samples in routes:
            # The known address of an email change is another account's; of the sign-in, one
            # that no other route changes; of the rest, any.
            if name.startswith("PUT"):
                known_addr = known[1]
            elif "token" in name:
                known_addr = known[3]
            else:
                known_addr = known[2]
            times = {"known": [], "unknown": []}
            for i in range(samples + 20):
                order = [("known", known_addr), ("unknown", fresh())]
                if i % 2:
                    order.reverse()
                for side, addr in order:
                    method, path, body, tok = make(addr)
                    dt, status = call(base, method, path, body, tok)
                    if status != expected:
                        sys.exit(f"{name} for the {side} address answered {status}, not {expected}")
                    if i >= 20:  # the first rounds warm caches and connections
                        times[side].append(dt * 1000)
            k = statistics.median(times["known"])
            u = statistics.median(times["unknown"])
            ok = k <= u * (1 + TOLERANCE) + SLACK_MS
            failed |= not ok
            print(f"{name:42} {k:9.3f} {u:11.3f} {k / u:6.2f}  {'ok' if ok else 'SLOWER FOR KNOWN'}")
        print(f"({SAMPLES} interleaved pairs per route, {SIGN_IN_SAMPLES} for the sign-in; "
              f"tolerance {TOLERANCE:.0%} + {SLACK_MS} ms)")
        # 3: the verdict (a known address was slower); 1 is Python's own for a run that broke.
        sys.exit(3 if failed else 0)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
