"""A Node.js client and worker (the npm ``zeromq`` package, written from docs/PROTOCOL.md)
interoperate with the Python SDK through the real broker."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
from test_sdk_harness import WORKER_OPTIONS, Broker, launch_broker, wait_for

from arbiter.client import Client
from arbiter.worker import Worker

pytestmark = pytest.mark.e2e

NODE_DIR = Path(__file__).resolve().parent / "node"
NODE = shutil.which("node")
NPM = shutil.which("npm")


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """``npm install`` once; later runs reuse tests/broker/node/node_modules."""
    if NODE is None or NPM is None:
        pytest.skip("node and npm are needed for the interop tests and are not installed")
    installed = NODE_DIR / "node_modules" / "zeromq"
    if not installed.is_dir():
        result = subprocess.run(
            [NPM, "install", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, f"npm install failed:\n{result.stdout}\n{result.stderr}"
    return installed


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, node_modules: Path) -> Iterator[Broker]:
    yield from launch_broker(tmp_path_factory.mktemp("node-broker"))


def run_node_client(broker: Broker, service: str, command: str, parameters: dict[str, Any]) -> tuple[int, Any]:
    result = subprocess.run(
        [NODE, "client.mjs", broker.frontend, service, command, json.dumps(parameters), "10000"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = result.stdout.strip()
    return result.returncode, (json.loads(out) if out else result.stderr)


def test_node_client_to_python_worker(broker: Broker) -> None:
    worker = Worker(broker.frontend, "py-math", **WORKER_OPTIONS)

    @worker.command("add")
    def add(parameters: dict[str, Any], envelope: dict[str, Any]) -> dict[str, Any]:
        return {"sum": parameters["a"] + parameters["b"], "caller": envelope["source"]}

    worker.start()
    try:
        with Client(broker.frontend) as probe:
            assert wait_for(lambda: probe.has_service("py-math", timeout=2))
        code, reply = run_node_client(broker, "py-math", "add", {"a": 2, "b": 40})
        bad_code, bad = run_node_client(broker, "py-math", "divide", {})
    finally:
        worker.stop()

    assert code == 0, reply
    assert reply["payload"] == {"status": "success", "result": {"sum": 42, "caller": "node-client"}}
    assert reply["messageType"] == "response" and reply["correlationId"]
    assert bad_code == 1 and bad["payload"]["error"]["code"] == "UNKNOWN_COMMAND"


@pytest.fixture
def node_worker(broker: Broker, node_modules: Path) -> Iterator[subprocess.Popen]:
    heartbeat_ms = str(int(WORKER_OPTIONS["heartbeat_interval"] * 1000))
    proc = subprocess.Popen(
        [NODE, "worker.mjs", broker.frontend, "node-greeter", heartbeat_ms],
        cwd=NODE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_python_client_to_node_worker(broker: Broker, node_worker: subprocess.Popen) -> None:
    with Client(broker.frontend, timeout=10, retries=1) as client:
        assert wait_for(lambda: client.has_service("node-greeter", timeout=2), timeout=60), _stderr(node_worker)
        reply = client.call("node-greeter", "greet", {"name": "Ada"}, source="py-tests")
        unknown = client.call("node-greeter", "sing", {})

    assert reply.ok, reply.error
    assert reply.result == {"greeting": "hello Ada", "runtime": "node", "length": 3}
    assert reply.envelope["correlationId"] and reply.envelope["destination"] == "py-tests"
    assert not unknown.ok and unknown.error["code"] == "UNKNOWN_COMMAND"


def _stderr(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        return f"node worker running (pid {proc.pid}) but not registered"
    return f"node worker exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
