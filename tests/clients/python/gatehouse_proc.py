"""Starting a real `gatehouse serve` for the Python client suites (shared by both files)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
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
