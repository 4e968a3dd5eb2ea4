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
    texts = [
        "Build a FastAPI endpoint for orders with MongoDB and Keycloak auth for tenant acme-corp",
        "Build a FastAPI endpoint with MongoDB and Keycloak auth",
        "write a poem about the sea",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "arbiter", "--root", str(root), "demo", "--json", *texts],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    stated, unstated, poem = json.loads(done.stdout)
    # the plan ran both phases, each with the parameters its text states
    assert (stated["plugin"], stated["status"], stated["collaborators"]) == (
        "fastapi-backend",
        "success",
        ["lobbi-platform-manager"],
    )
    assert [(p["plugin"], p["command"], p["status"]) for p in stated["phases"]] == [
        ("fastapi-backend", "scaffold-endpoint", "completed"),
        ("lobbi-platform-manager", "configure-keycloak", "completed"),
    ]
    assert stated["phases"][1]["result"]["tenantId"] == "acme-corp"
    # the same request without them is asked for what it lacks, naming each command's parameter
    assert unstated["error"] == "NEEDS_INPUT" and unstated["phases"] == []
    assert unstated["missing"] == [
        {"plugin": "fastapi-backend", "command": "scaffold-endpoint", "missing": ["resource"]},
        {"plugin": "lobbi-platform-manager", "command": "configure-keycloak", "missing": ["tenantId"]},
    ]
    assert (poem["plugin"], poem["error"]) == (None, "NO_ROUTE")
    assert all(nothing_listens(p) for p in ports), "broker still bound after the demo"
    log = (root / ".arbiter" / "demo-broker.log").read_text()
    assert "stopped" in log
