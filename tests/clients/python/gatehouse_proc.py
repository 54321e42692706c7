"""Starting a real `gatehouse serve` for the Python client suites (shared by every file)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("GATEHOUSE_BIN") or REPO / "target" / "debug" / "gatehouse")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def serve(env: dict, cwd: Path, log, log_path: Path):
    """Starts `gatehouse serve` on a free port; returns (process, its URL). The port is picked
    here, not bound by the server (port 0), because the public URL, given at start, names it;
    a port taken in between makes the server exit with "cannot listen on", and it is started
    again on another."""
    for _ in range(5):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**env, "GATEHOUSE_LISTEN": f"127.0.0.1:{port}", "GATEHOUSE_PUBLIC_URL": url}
        proc = subprocess.Popen(
            [str(BIN), "serve"], env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            if "gatehouse listening" in log_path.read_text(errors="replace"):
                return proc, url
            time.sleep(0.05)
        if proc.poll() is None or "cannot listen on" not in log_path.read_text(errors="replace"):
            return proc, url  # the caller's readiness check reports what went wrong
    return proc, url


class Running:
    """A started server: its `url`, the `env` it runs with, its temp dir and log file."""

    def __init__(self, url: str, env: dict, tmp: Path, log_path: Path):
        self.url = url
        self.env = env
        self.tmp = tmp
        self.log_path = log_path


@contextlib.contextmanager
def running(prefix: str, settings: dict):
    """Runs `gatehouse serve` for a test module: a temp dir, the caller's environment without
    the test harness's own variables, the database of GATEHOUSE_CLIENT_TEST_DATABASE_URL (else
    a SQLite file in the temp dir), autoconfirm on, then `settings`; waits for /healthz, yields
    a `Running`, and stops the server and removes the temp dir afterwards."""
    import pytest  # only the test modules import this file, and pytest runs them

    if not BIN.exists():
        pytest.fail(f"gatehouse binary not found at {BIN} (build it or set GATEHOUSE_BIN)")
    tmp = Path(tempfile.mkdtemp(prefix=f"gatehouse-{prefix}-"))
    inherited = {
        k: v
        for k, v in os.environ.items()
        if k != "GATEHOUSE_BIN" and not k.startswith("GATEHOUSE_CLIENT_TEST_")
    }
    env = {
        **inherited,
        "GATEHOUSE_DATABASE_URL": os.environ.get("GATEHOUSE_CLIENT_TEST_DATABASE_URL")
        or f"sqlite://{tmp}/gh.db",
        "GATEHOUSE_AUTOCONFIRM": "true",
        **settings,
    }
    log_path = tmp / "server.log"
    log = open(log_path, "wb")
    proc, url = serve(env, tmp, log, log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"gatehouse exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}"
                )
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail("gatehouse did not become ready within 30 s")
            time.sleep(0.2)
        yield Running(url, {**env, "GATEHOUSE_PUBLIC_URL": url}, tmp, log_path)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
