"""`arbiter demo`: broker and workers as real processes, requests routed end to end, all stopped after."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_sdk_harness import free_port, make_project

pytestmark = pytest.mark.e2e


def nothing_listens(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_demo_routes_end_to_end_and_cleans_up(tmp_path: Path) -> None:
    ports = [free_port() for _ in range(3)]
    root = make_project(tmp_path, *(f"tcp://127.0.0.1:{p}" for p in ports))
    texts = ["Build a FastAPI endpoint with MongoDB and Keycloak auth", "write a poem about the sea"]
    done = subprocess.run(
        [sys.executable, "-m", "arbiter", "--root", str(root), "demo", "--json", *texts],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    first, second = json.loads(done.stdout)
    assert (first["plugin"], first["status"], first["collaborators"]) == (
        "fastapi-backend",
        "success",
        ["lobbi-platform-manager"],
    )
    assert first["result"]["plugin"] == "fastapi-backend"
    assert (second["plugin"], second["error"]) == (None, "NO_ROUTE")
    assert all(nothing_listens(p) for p in ports), "broker still bound after the demo"
    log = (root / ".arbiter" / "demo-broker.log").read_text()
    assert "stopped" in log
