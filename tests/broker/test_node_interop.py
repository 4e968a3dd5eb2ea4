"""A Node.js client and worker (the npm ``zeromq`` package, written from docs/PROTOCOL.md)
interoperate with the Python SDK through the real broker."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import zmq
from test_sdk_harness import WORKER_OPTIONS, Broker, launch_broker, wait_for
from test_security import client, secure_broker

from arbiter.sdk.client import Client, build_request
from arbiter.sdk.curve import BROKER_KEY_ENV, KEY_ENV
from arbiter.sdk.worker import Worker
from arbiter.wire import envelope as env
from arbiter.wire.mdp import MDPC01

pytestmark = pytest.mark.e2e

NODE_DIR = Path(__file__).resolve().parent / "node"
NODE = shutil.which("node")
NPM = shutil.which("npm")


def _missing(reason: str) -> None:
    """In CI a missing toolchain is a broken build, not a reason to skip; locally it is optional."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """Install the locked npm packages once (``npm ci``); later runs reuse tests/broker/node/node_modules."""
    if NODE is None or NPM is None:
        _missing("node and npm are needed for the interop tests and are not installed")
    installed = NODE_DIR / "node_modules" / "zeromq"
    if not installed.is_dir():
        locked = (NODE_DIR / "package-lock.json").is_file()
        command = [NPM, "ci" if locked else "install", "--no-audit", "--no-fund"]
        result = subprocess.run(command, cwd=NODE_DIR, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{' '.join(command[:2])} failed:\n{result.stdout}\n{result.stderr}"
    probe = subprocess.run(
        [NODE, "--input-type=module", "-e", "import('zeromq').then(z => console.log(z.version))"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, f"the zeromq package does not load:\n{probe.stderr}"
    return installed


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, node_modules: Path) -> Iterator[Broker]:
    yield from launch_broker(tmp_path_factory.mktemp("node-broker"))


def run_node_client(
    broker: Any,
    service: str,
    command: str,
    parameters: dict[str, Any],
    timeout_ms: int = 10_000,
    env: dict[str, str] | None = None,
) -> tuple[int, Any]:
    result = subprocess.run(
        [NODE, "client.mjs", broker.frontend, service, command, json.dumps(parameters), str(timeout_ms)],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
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
            assert wait_for(lambda: probe.has_service("py-math", timeout=2)), "py-math never registered"
        code, reply = run_node_client(broker, "py-math", "add", {"a": 2, "b": 40})
        bad_code, bad = run_node_client(broker, "py-math", "divide", {})
    finally:
        worker.stop()

    assert code == 0, reply
    assert reply["payload"] == {"status": "success", "result": {"sum": 42, "caller": "node-client"}}
    assert reply["messageType"] == "response" and reply["correlationId"]
    assert bad_code == 1 and bad["payload"]["error"]["code"] == "UNKNOWN_COMMAND"


def start_node_worker(broker: Any, service: str, *options: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    heartbeat_ms = str(int(WORKER_OPTIONS["heartbeat_interval"] * 1000))
    return subprocess.Popen(
        [NODE, "worker.mjs", broker.frontend, service, heartbeat_ms, str(WORKER_OPTIONS["liveness"]), *options],
        cwd=NODE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def stop_node_worker(proc: subprocess.Popen) -> None:
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


@pytest.fixture
def node_worker(broker: Broker, node_modules: Path) -> Iterator[subprocess.Popen]:
    proc = start_node_worker(broker, "node-greeter")
    try:
        yield proc
    finally:
        stop_node_worker(proc)


def test_python_client_to_node_worker(broker: Broker, node_worker: subprocess.Popen) -> None:
    with Client(broker.frontend, timeout=10, retries=1) as client:
        assert wait_for(lambda: client.has_service("node-greeter", timeout=2), timeout=60), _stderr(node_worker)
        reply = client.call("node-greeter", "greet", {"name": "Ada"}, source="py-tests")
        unknown = client.call("node-greeter", "sing", {})

    assert reply.ok, reply.error
    assert reply.result == {"greeting": "hello Ada", "runtime": "node", "length": 3}
    assert reply.envelope["correlationId"] and reply.envelope["destination"] == "py-tests"
    assert not unknown.ok and unknown.error["code"] == "UNKNOWN_COMMAND"


def test_python_client_to_packed_node_worker(broker: Broker, node_modules: Path) -> None:
    """The packed-delivery extension, from its description in PROTOCOL.md alone, in another language."""
    proc = start_node_worker(broker, "node-packed", "4", "packed")
    try:
        with Client(broker.frontend, timeout=10, retries=1) as client:
            assert wait_for(lambda: client.has_service("node-packed", timeout=2), timeout=60), _stderr(proc)
            replies = [client.call("node-packed", "greet", {"name": name}) for name in ("Ada", "Grace", "Edsger")]
            service = client.call("arbiter.status", "status").result["services"]["node-packed"]
    finally:
        stop_node_worker(proc)

    assert [r.result["greeting"] for r in replies] == ["hello Ada", "hello Grace", "hello Edsger"]
    assert service["packedWorkers"] == 1 and service["credit"] == 4


def test_batched_node_worker_answers_a_whole_batch(broker: Broker, node_modules: Path) -> None:
    """Batched delivery from PROTOCOL.md alone: requests queued before the worker comes reach it
    in one message, a frame each, and every one is answered."""
    caller = zmq.Context.instance().socket(zmq.DEALER)
    caller.setsockopt(zmq.LINGER, 0)
    caller.connect(broker.frontend)
    names = ["Ada", "Grace", "Edsger"]
    requests = {}
    for name in names:
        request = build_request("node-batched", "greet", {"name": name}, 60, 0)
        requests[request["messageId"]] = name
        caller.send_multipart([b"", MDPC01, b"node-batched", env.encode(request)])
    assert wait_for(lambda: queued(broker, "node-batched") == 3, timeout=30), "the requests are not all queued"
    proc = start_node_worker(broker, "node-batched", "4", "batched")
    try:
        answered = {}
        for _ in names:
            assert caller.poll(60_000), _stderr(proc)
            reply = env.decode(caller.recv_multipart()[3])
            answered[requests[reply["correlationId"]]] = reply["payload"]["result"]["greeting"]
        with Client(broker.frontend, timeout=10, retries=1) as client:
            service = client.call("arbiter.status", "status").result["services"]["node-batched"]
    finally:
        stop_node_worker(proc)
        caller.close(linger=0)

    assert answered == {name: f"hello {name}" for name in names}
    assert service["batchedWorkers"] == 1 and service["requests"] == 3


def queued(broker: Broker, service: str) -> int:
    with Client(broker.frontend, timeout=10, retries=1) as client:
        return client.call("arbiter.status", "status").result["services"].get(service, {}).get("queued", 0)


def _stderr(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        return f"node worker running (pid {proc.pid}) but not registered"
    return f"node worker exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"


@pytest.fixture
def fresh_broker(tmp_path: Path, node_modules: Path) -> Iterator[Broker]:
    """A broker of its own, to kill and restart."""
    yield from launch_broker(tmp_path)


def test_node_worker_returns_after_a_broker_restart_and_says_goodbye(fresh_broker: Broker) -> None:
    """The Node worker follows the life cycle of PROTOCOL.md §2.3: it re-registers with a restarted
    broker (DISCONNECT or silence, then a new socket and READY) and sends DISCONNECT when stopped."""
    proc = start_node_worker(fresh_broker, "node-phoenix")
    try:
        with Client(fresh_broker.frontend, timeout=2, retries=0) as client:
            assert wait_for(lambda: client.has_service("node-phoenix"), timeout=60), _stderr(proc)
        fresh_broker.kill()
        fresh_broker.start()
        with Client(fresh_broker.frontend, timeout=5, retries=2) as client:
            assert wait_for(lambda: client.has_service("node-phoenix", timeout=2), timeout=60), _stderr(proc)
            assert client.call("node-phoenix", "greet", {"name": "again"}).result["greeting"] == "hello again"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
            assert wait_for(lambda: not client.has_service("node-phoenix", timeout=2), timeout=10), (
                "the stopped Node worker is still registered: no DISCONNECT"
            )
    finally:
        stop_node_worker(proc)


def peer_env(broker: Any, name: str | None) -> dict[str, str]:
    """The environment of a Node peer with ``name``'s keys (None: no keys at all)."""
    env = {k: v for k, v in os.environ.items() if k not in (KEY_ENV, BROKER_KEY_ENV)}
    if name is not None:
        env[KEY_ENV] = str(broker.root / "keys" / f"{name}.key_secret")
        env[BROKER_KEY_ENV] = str(broker.root / "keys" / "broker.key")
    return env


def test_node_peers_speak_curve_to_a_broker_with_security_on(tmp_path: Path, node_modules: Path) -> None:
    """CURVE from the key files alone, in another language: a Node worker with a permitted key
    serves a Python client, a Node client with a permitted key is answered, and one without keys
    gets nothing (its handshake is refused)."""
    with secure_broker(tmp_path) as broker:
        proc = start_node_worker(broker, "fastapi-backend", env=peer_env(broker, "billing-worker"))
        try:
            with client(broker, "web-client", timeout=10) as web:
                assert wait_for(lambda: web.mmi("fastapi-backend") == "200", timeout=60), _stderr(proc)
                reply = web.call("fastapi-backend", "greet", {"name": "Ada"})
            code, answered = run_node_client(
                broker, "fastapi-backend", "greet", {"name": "Grace"}, env=peer_env(broker, "web-client")
            )
            refused, nothing = run_node_client(
                broker, "fastapi-backend", "greet", {"name": "Eve"}, timeout_ms=1000, env=peer_env(broker, None)
            )
        finally:
            stop_node_worker(proc)
    assert reply.ok and reply.result["greeting"] == "hello Ada" and reply.result["runtime"] == "node"
    assert code == 0 and answered["payload"]["result"]["greeting"] == "hello Grace", answered
    assert refused == 2, nothing  # no reply within its tries
