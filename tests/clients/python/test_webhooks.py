"""Gatehouse's webhooks verified by the official Standard Webhooks library
(`standardwebhooks` on PyPI, unmodified), against a real `gatehouse serve` process.

Run (from the repo root), after `cargo build`:
    .venv/bin/pytest tests/clients/python/test_webhooks.py
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gatehouse_proc import running
PK = "gk_publishable_webhooks_test"


class Receiver:
    """A webhook endpoint: records every request; answers from a script, then 200."""

    def __init__(self) -> None:
        self.hits: list[tuple[dict[str, str], bytes]] = []
        self.script: list[int] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    receiver.hits.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    status = receiver.script.pop(0) if receiver.script else 200
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, pred, what: str, timeout: float = 15.0, log=None):
        """Waits until `pred` holds of the hits; on a timeout, `log()` (the endpoint's delivery
        log, which also shows attempts that never reached the receiver) joins the message."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                hits = list(self.hits)
            if pred(hits):
                return hits
            time.sleep(0.05)
        pytest.fail(
            f"timed out waiting for {what}; got {len(self.hits)} requests\n"
            f"server warnings and errors (last 20):\n{_server_problems()}"
            + (f"\ndelivery log (newest first):\n{log()}" if log else "")
        )

    def event(self, event_type: str):
        hits = self.wait(
            lambda hs: any(json.loads(b)["type"] == event_type for _, b in hs), event_type
        )
        return next((h, b) for h, b in hits if json.loads(b)["type"] == event_type)


# The running server's log, so that a timed-out wait can say what the server saw.
SERVER_LOG: Path | None = None


def _server_problems() -> str:
    if SERVER_LOG is None or not SERVER_LOG.exists():
        return "(no server log)"
    lines = SERVER_LOG.read_text(errors="replace").splitlines()
    return "\n".join([l for l in lines if " WARN " in l or " ERROR " in l][-20:]) or "(none)"


# The server must be the only one on its database: another instance's worker would claim
# some of these deliveries and send them with its own webhook settings (test_supabase.py's
# server, with private targets refused, did so on PostgreSQL until it became module-scoped).
@pytest.fixture(scope="module")
def base():
    global SERVER_LOG
    with running(
        "hooks",
        {
            "GATEHOUSE_PUBLISHABLE_KEY": PK,
            "GATEHOUSE_RATE_LIMIT_SIGN_UP": "1000/60s",
            # The receiver listens on 127.0.0.1; retries come after 1 s instead of 5 s.
            "GATEHOUSE_WEBHOOKS_ALLOW_PRIVATE": "true",
            "GATEHOUSE_WEBHOOKS_POLL_INTERVAL_MS": "100",
            "GATEHOUSE_WEBHOOKS_RETRY_SCHEDULE": "0,1,1",
            # The receiver is local and answers at once: a 3 s attempt timeout is ample, and a
            # claim (2 x timeout + 1 s) lapses after 7 s instead of the default's 31 s.
            "GATEHOUSE_WEBHOOKS_TIMEOUT_MS": "3000",
        },
    ) as server:
        SERVER_LOG = server.log_path
        yield server.url


def call(base: str, method: str, path: str, token: str | None = None, body=None):
    req = urllib.request.Request(f"{base}{path}", method=method)
    req.add_header("content-type", "application/json")
    req.add_header("apikey", PK)
    if token:
        req.add_header("authorization", f"Bearer {token}")
    data = json.dumps(body if body is not None else {}).encode()
    try:
        with urllib.request.urlopen(req, data=data, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def org_with_endpoint(base: str, receiver: Receiver):
    status, session = call(
        base, "POST", "/auth/v1/signup", None,
        {"email": f"hooks-{uuid.uuid4().hex}@example.com", "password": "correct horse battery"},
    )
    assert status == 200, session
    token = session["access_token"]
    status, org = call(base, "POST", "/v1/orgs", token, {"name": "Hooks"})
    assert status == 201, org
    org_id = org["data"]["id"]
    status, ep = call(base, "POST", f"/v1/orgs/{org_id}/webhooks", token, {"url": receiver.url})
    assert status == 201, ep
    return token, org_id, ep["data"]


def delivery_log(base: str, token: str, org: str, endpoint_id: str) -> str:
    status, body = call(base, "GET", f"/v1/orgs/{org}/webhooks/{endpoint_id}/deliveries", token)
    if status != 200:
        return f"(GET deliveries answered {status}: {body})"
    return "\n".join(
        f"attempt {a['attempt']} at {a['created_at']}: status {a['status_code']}, "
        f"{a['response'][:120]!r}, delivery {a['delivery_status']}"
        for a in body["data"]
    ) or "(no attempts recorded)"


def test_a_delivery_verifies_with_the_official_library(base):
    receiver = Receiver()
    token, org, ep = org_with_endpoint(base, receiver)
    status, key = call(base, "POST", f"/v1/orgs/{org}/api-keys", token, {"name": "k"})
    assert status == 201, key
    headers, body = receiver.event("api_key.created")
    payload = Webhook(ep["secret"]).verify(body, headers)
    assert payload["type"] == "api_key.created"
    assert payload["data"]["id"] == key["data"]["id"]
    assert key["data"]["key"] not in body.decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(ep["secret"]).verify(body.replace(b"api_key", b"api_kez"), headers)
    status, other = call(base, "POST", f"/v1/orgs/{org}/webhooks", token, {"url": receiver.url})
    with pytest.raises(WebhookVerificationError):
        Webhook(other["data"]["secret"]).verify(body, headers)


def test_during_a_rotation_both_secrets_verify(base):
    receiver = Receiver()
    token, org, ep = org_with_endpoint(base, receiver)
    old = ep["secret"]
    status, rotated = call(base, "POST", f"/v1/orgs/{org}/webhooks/{ep['id']}/rotate-secret", token)
    assert status == 200, rotated
    new = rotated["data"]["secret"]
    assert new != old
    status, queued = call(base, "POST", f"/v1/orgs/{org}/webhooks/{ep['id']}/test", token)
    assert status == 202, queued
    headers, body = receiver.event("webhook.test")
    assert headers["webhook-id"] == queued["data"]["message_id"]
    assert len(headers["webhook-signature"].split(" ")) == 2
    # A receiver still configured with the old secret, and one already on the new one.
    assert Webhook(old).verify(body, headers)["type"] == "webhook.test"
    assert Webhook(new).verify(body, headers)["type"] == "webhook.test"


def test_every_retry_verifies_and_keeps_its_id(base):
    receiver = Receiver()
    receiver.script = [500, 500]
    token, org, ep = org_with_endpoint(base, receiver)
    status, _ = call(base, "POST", f"/v1/orgs/{org}/webhooks/{ep['id']}/test", token)
    assert status == 202
    # Generous: an attempt whose result could not be recorded is re-sent when its claim
    # lapses (7 s with the 3 s timeout above), which a loaded CI machine can cause.
    hits = receiver.wait(
        lambda hs: len(hs) >= 3, "three attempts", timeout=25.0,
        log=lambda: delivery_log(base, token, org, ep["id"]),
    )
    assert len({h["webhook-id"] for h, _ in hits}) == 1
    for headers, body in hits:
        Webhook(ep["secret"]).verify(body, headers)
    assert len({h["webhook-timestamp"] for h, _ in hits}) == 3, "each attempt is signed afresh"
