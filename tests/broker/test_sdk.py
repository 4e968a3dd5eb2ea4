"""The Python SDK (client and worker) against a real broker process."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import pytest
import zmq
from click.testing import CliRunner
from test_sdk_harness import WORKER_OPTIONS, Broker, launch_broker, wait_for

from arbiter.cli import main
from arbiter.cli.sdk_commands import request as request_command
from arbiter.project.snapshot import build_snapshot
from arbiter.sdk.client import AsyncClient, Client, RequestTimeout, build_request
from arbiter.sdk.demo_workers import plugin_worker
from arbiter.sdk.worker import CommandError, Worker
from arbiter.wire import envelope as env
from arbiter.wire.mdp import MDPC01

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    yield from launch_broker(tmp_path_factory.mktemp("broker"))


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of its own, for tests that kill and restart it."""
    yield from launch_broker(tmp_path)


class Workers:
    """Starts workers for a test and always stops them."""

    def __init__(self) -> None:
        self.running: list[Worker] = []

    def start(self, worker: Worker, client: Client | None = None) -> Worker:
        worker.start()
        self.running.append(worker)
        if client is not None:
            assert wait_for(lambda: client.has_service(worker.service, timeout=2)), f"{worker.service} never registered"
        return worker

    def stop_all(self) -> None:
        for worker in self.running:
            worker.stop(timeout=10)


@pytest.fixture
def workers() -> Iterator[Workers]:
    pool = Workers()
    yield pool
    pool.stop_all()


@pytest.fixture
def client(broker: Broker) -> Iterator[Client]:
    with Client(broker.frontend, timeout=5, retries=2) as c:
        yield c


def counting_worker(endpoint: str, service: str, credit: int = 1) -> tuple[Worker, list[dict[str, Any]]]:
    """A worker whose ``analyze-document`` counts words and records every envelope it runs."""
    seen: list[dict[str, Any]] = []
    worker = Worker(endpoint, service, credit=credit, **WORKER_OPTIONS)

    @worker.command("analyze-document")
    def analyze(parameters: dict[str, Any], envelope: dict[str, Any]) -> dict[str, Any]:
        seen.append(envelope)
        text = str(parameters.get("text", ""))
        return {"words": len(text.split()), "path": parameters.get("documentPath")}

    @worker.command("fail")
    def fail(parameters: dict[str, Any], envelope: dict[str, Any]) -> None:
        raise CommandError("NOT_ALLOWED", "this command always refuses")

    @worker.command("crash")
    def crash(parameters: dict[str, Any], envelope: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    return worker, seen


def test_round_trip_reply_envelope(broker: Broker, client: Client, workers: Workers) -> None:
    worker, seen = counting_worker(broker.frontend, "sdk-docs")
    workers.start(worker, client)
    request = build_request(
        "sdk-docs",
        "analyze-document",
        {"text": "one two three", "documentPath": "rfp.pdf"},
        5,
        2,
        source="tests",
        headers={"userId": "u-1"},
    )

    reply = client.request("sdk-docs", request)

    assert reply.ok and reply.result == {"words": 3, "path": "rfp.pdf"}
    answer = reply.envelope
    assert answer is not None
    assert answer["messageType"] == "response"
    assert answer["correlationId"] == request["messageId"]
    assert answer["messageId"] != request["messageId"]
    assert answer["source"] == "sdk-docs" and answer["destination"] == "tests"
    assert answer["headers"]["traceId"] == request["headers"]["traceId"]
    assert answer["headers"]["parentSpanId"] == request["headers"]["spanId"]
    assert datetime.fromisoformat(answer["timestamp"].replace("Z", "+00:00")).tzinfo is not None
    assert seen[0]["payload"]["parameters"]["documentPath"] == "rfp.pdf"
    assert seen[0]["headers"]["userId"] == "u-1"


def test_message_ids_are_version_4_uuids() -> None:
    ids = [env.new_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_request_envelope_has_every_seed_field() -> None:
    request = build_request("exec-automator", "analyze-document", {"documentPath": "x"}, 2.0, 2, context={"k": 1})
    assert set(request) == {
        "messageId",
        "correlationId",
        "timestamp",
        "source",
        "destination",
        "topic",
        "messageType",
        "priority",
        "headers",
        "payload",
        "metadata",
    }
    assert request["topic"] == "plugin/exec-automator/request"
    assert request["payload"] == {
        "command": "analyze-document",
        "parameters": {"documentPath": "x"},
        "context": {"k": 1},
    }
    assert request["metadata"]["retryCount"] == 0 and request["metadata"]["timeout"] == 6000
    assert {"traceId", "spanId"} <= set(request["headers"])
    assert not env.is_expired(request)


def test_error_replies(broker: Broker, client: Client, workers: Workers) -> None:
    worker, _ = counting_worker(broker.frontend, "sdk-errors")
    workers.start(worker, client)

    refused = client.call("sdk-errors", "fail")
    unknown = client.call("sdk-errors", "no-such-command")
    crashed = client.call("sdk-errors", "crash")
    raw = client.request("sdk-errors", b"not an envelope")

    assert not refused.ok and refused.error == {"code": "NOT_ALLOWED", "message": "this command always refuses"}
    assert unknown.error["code"] == "UNKNOWN_COMMAND" and "analyze-document" in unknown.error["message"]
    assert crashed.error["code"] == "HANDLER_ERROR" and "boom" in crashed.error["message"]
    assert raw.error["code"] == "BAD_REQUEST"


def test_raw_handler_gets_plain_bodies(broker: Broker, client: Client, workers: Workers) -> None:
    worker = Worker(broker.frontend, "sdk-raw", **WORKER_OPTIONS)
    worker.raw(lambda frames: frames[0][::-1])
    workers.start(worker, client)

    assert client.request("sdk-raw", b"abc").body == b"cba"


def test_mmi(broker: Broker, client: Client, workers: Workers) -> None:
    worker, _ = counting_worker(broker.frontend, "sdk-mmi")
    workers.start(worker, client)
    assert client.mmi("sdk-mmi") == "200"
    assert client.mmi("sdk-nobody-serves-this") == "404"
    worker.stop()
    assert wait_for(lambda: not client.has_service("sdk-mmi")), "DISCONNECT did not unregister the worker"


def test_duplicates_run_once(broker: Broker, client: Client, workers: Workers) -> None:
    worker, seen = counting_worker(broker.frontend, "sdk-dup")
    workers.start(worker, client)
    request = build_request("sdk-dup", "analyze-document", {"text": "a b"}, 5, 2)

    first = client.request("sdk-dup", request)
    again = client.request("sdk-dup", env.mark_retry(dict(request)))

    assert len(seen) == 1
    assert first.result == again.result == {"words": 2, "path": None}
    assert again.envelope["correlationId"] == request["messageId"]
    assert worker.duplicates == 1


def test_concurrent_duplicates_each_get_a_reply(broker: Broker, workers: Workers) -> None:
    """Two copies in flight at once (e.g. a re-dispatch racing a retry): one run, two replies."""
    gate = threading.Event()
    runs: list[str] = []
    worker = Worker(broker.frontend, "sdk-dup-race", **WORKER_OPTIONS)

    @worker.command("slow")
    def slow(parameters: dict[str, Any], envelope: dict[str, Any]) -> dict[str, Any]:
        runs.append(envelope["messageId"])
        gate.wait(20)
        return {"n": parameters["n"] * 2}

    with Client(broker.frontend) as probe:
        workers.start(worker, probe)
    body = env.encode(build_request("sdk-dup-race", "slow", {"n": 4}, 10, 0))
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(broker.frontend)
        for _ in range(2):
            sock.send_multipart([b"", MDPC01, b"sdk-dup-race", body])
        assert wait_for(lambda: len(runs) == 1), "the first copy never reached the handler"
        gate.set()
        replies = [sock.recv_multipart() for _ in range(2) if sock.poll(20_000)]
    finally:
        sock.close(linger=0)
    assert len(replies) == 2 and len(runs) == 1
    assert all(env.decode(r[3])["payload"]["result"] == {"n": 8} for r in replies)


def test_credit_worker_holds_several_requests(broker: Broker, workers: Workers) -> None:
    """With credit 3 all three requests are inside the handler together (a barrier proves it)."""
    barrier = threading.Barrier(3, timeout=30)
    plain_barrier = threading.Barrier(2, timeout=1)
    worker = Worker(broker.frontend, "sdk-credit", credit=3, **WORKER_OPTIONS)

    @worker.command("meet")
    def meet(parameters: dict[str, Any], envelope: dict[str, Any]) -> dict[str, Any]:
        return {"arrived": barrier.wait()}

    plain = Worker(broker.frontend, "sdk-plain", **WORKER_OPTIONS)

    @plain.command("meet")
    def meet_plain(parameters: dict[str, Any], envelope: dict[str, Any]) -> dict[str, Any]:
        try:
            plain_barrier.wait()
        except threading.BrokenBarrierError:
            return {"alone": True}
        return {"alone": False}

    with Client(broker.frontend) as probe:
        workers.start(worker, probe)
        workers.start(plain, probe)

    async def three(service: str) -> list[Any]:
        clients = [AsyncClient(broker.frontend, timeout=40, retries=0) for _ in range(3)]
        try:
            return await asyncio.gather(*(c.call(service, "meet") for c in clients))
        finally:
            for c in clients:
                c.close()

    replies = asyncio.run(three("sdk-credit"))
    assert all(r.ok for r in replies), [r.error for r in replies]
    assert sorted(r.result["arrived"] for r in replies) == [0, 1, 2]

    plain_replies = asyncio.run(three("sdk-plain"))
    assert all(r.ok and r.result == {"alone": True} for r in plain_replies), "a plain worker held two requests"


def test_async_client(broker: Broker, workers: Workers) -> None:
    worker, seen = counting_worker(broker.frontend, "sdk-async")

    async def scenario() -> tuple[bool, bool, list[Any]]:
        async with AsyncClient(broker.frontend, timeout=5) as client:
            served = await client.has_service("sdk-async")
            unserved = await client.has_service("sdk-nobody-serves-this")
            replies = await asyncio.gather(
                *(client.call("sdk-async", "analyze-document", {"text": "w " * n}) for n in range(1, 4))
            )
            return served, unserved, replies

    with Client(broker.frontend) as probe:
        workers.start(worker, probe)
    served, unserved, replies = asyncio.run(scenario())
    assert served, "MMI through the async client did not see the registered worker"
    assert not unserved, "MMI through the async client reported a service nobody serves"
    assert [r.result["words"] for r in replies] == [1, 2, 3]
    assert len({r.envelope["correlationId"] for r in replies}) == 3
    assert sorted(e["payload"]["parameters"]["text"].count("w") for e in seen) == [1, 2, 3]


def test_pipelined_requests_come_back_in_order(broker: Broker, client: Client, workers: Workers) -> None:
    worker, seen = counting_worker(broker.frontend, "sdk-pipe", credit=4)
    workers.start(worker, client)
    bodies = [build_request("sdk-pipe", "analyze-document", {"text": "w " * n}, 5, 2) for n in range(1, 7)]

    replies = client.pipeline("sdk-pipe", bodies)

    assert [r.result["words"] for r in replies] == [1, 2, 3, 4, 5, 6]
    assert [r.envelope["correlationId"] for r in replies] == [b["messageId"] for b in bodies]
    assert len(seen) == 6


def test_timeout_raises_clear_error(broker: Broker) -> None:
    with Client(broker.frontend, timeout=0.3, retries=1) as client:
        with pytest.raises(RequestTimeout, match="after 2 attempt"):
            client.request("sdk-nobody-serves-this", b"{}")


def test_retries_keep_the_message_id() -> None:
    """Lazy Pirate against a broker that never answers: same messageId, retryCount 0, 1, 2."""
    ctx = zmq.Context.instance()
    silent = ctx.socket(zmq.ROUTER)
    silent.setsockopt(zmq.LINGER, 0)
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    try:
        with Client(f"tcp://127.0.0.1:{port}", timeout=0.3, retries=2) as client:
            with pytest.raises(RequestTimeout, match="after 3 attempt"):
                client.call("anything", "noop", {"a": 1})
        received = [silent.recv_multipart() for _ in range(3) if silent.poll(5000)]
    finally:
        silent.close(linger=0)
    sent = [env.decode(frames[4]) for frames in received]
    assert [frames[2:4] for frames in received] == [[MDPC01, b"anything"]] * 3
    assert len({s["messageId"] for s in sent}) == 1
    assert [s["metadata"]["retryCount"] for s in sent] == [0, 1, 2]


def test_a_body_of_several_frames_goes_whole_on_every_attempt() -> None:
    """``more_frames``: the frames after the first are sent unchanged with each Lazy Pirate
    attempt, while an envelope first frame counts its retries; the reply may have several too."""
    ctx = zmq.Context.instance()
    server = ctx.socket(zmq.ROUTER)
    server.setsockopt(zmq.LINGER, 0)
    port = server.bind_to_random_port("tcp://127.0.0.1")
    received: list[list[bytes]] = []

    def answer_the_second_attempt() -> None:
        while len(received) < 2 and server.poll(10_000):
            received.append(server.recv_multipart())
        if len(received) == 2:
            identity, *_ = received[1]
            server.send_multipart([identity, b"", MDPC01, b"frames", b"ok", b"\x00second"])

    thread = threading.Thread(target=answer_the_second_attempt, daemon=True)
    thread.start()
    try:
        request = build_request("frames", "store", {"k": "v"}, 0.5, 1)
        with Client(f"tcp://127.0.0.1:{port}", timeout=0.5, retries=1) as client:
            reply = client.request("frames", request, more_frames=[b"\x00\xffblob", b""])
        thread.join(10)
    finally:
        server.close(linger=0)
    assert (reply.frames, reply.attempts) == ([b"ok", b"\x00second"], 2)
    assert [frames[2:4] + frames[5:] for frames in received] == [[MDPC01, b"frames", b"\x00\xffblob", b""]] * 2
    assert [env.decode(frames[4])["metadata"]["retryCount"] for frames in received] == [0, 1]
    assert request["metadata"]["retryCount"] == 0  # the caller's envelope is left alone


def test_broker_restart_mid_request(fresh_broker: Broker, workers: Workers) -> None:
    """Kill the broker while a request is inside the worker: the client retries the same
    messageId on a new socket, the worker reconnects, and the handler runs only once."""
    entered, release = threading.Event(), threading.Event()
    runs: list[dict[str, Any]] = []
    worker = Worker(fresh_broker.frontend, "sdk-restart", **WORKER_OPTIONS)

    @worker.command("work")
    def work(parameters: dict[str, Any], envelope: dict[str, Any]) -> dict[str, Any]:
        runs.append(envelope)
        entered.set()
        release.wait(30)
        return {"done": parameters["job"]}

    with Client(fresh_broker.frontend) as probe:
        workers.start(worker, probe)
    request = build_request("sdk-restart", "work", {"job": "j-1"}, 2.0, 20)
    outcome: dict[str, Any] = {}

    def call() -> None:
        with Client(fresh_broker.frontend, timeout=2.0, retries=20) as client:
            try:
                outcome["reply"] = client.request("sdk-restart", request)
            except Exception as exc:  # reported by the assertion below
                outcome["error"] = exc

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    assert entered.wait(30), "the request never reached the worker"
    fresh_broker.kill()
    fresh_broker.start()
    release.set()
    caller.join(60)

    assert "reply" in outcome, outcome.get("error")
    reply = outcome["reply"]
    assert reply.ok and reply.result == {"done": "j-1"}
    assert reply.attempts >= 2
    assert reply.envelope["correlationId"] == request["messageId"]
    assert len(runs) == 1
    assert worker.connections >= 2


def test_demo_workers_answer_the_chain_commands(broker: Broker, client: Client, workers: Workers) -> None:
    snapshot = build_snapshot(broker.root)
    for name in ("jira-orchestrator", "lobbi-platform-manager", "ahling-command-center", "frontend-powerhouse"):
        workers.start(plugin_worker(snapshot.plugins[name], broker.frontend, delay=0.001, **WORKER_OPTIONS), client)

    prepared = client.call("jira-orchestrator", "jira:prepare", {"issueKey": "proj-42"}).result
    worked = client.call("jira-orchestrator", "jira:work", {"issueKey": prepared["issueKey"]}).result
    pr = client.call("jira-orchestrator", "jira:pr", {"issueKey": "PROJ-42"}).result
    tenant = client.call("lobbi-platform-manager", "create-tenant", {"tenantId": "acme"}).result
    realm = client.call("lobbi-platform-manager", "configure-keycloak", {"tenantId": "acme"}).result
    resources = client.call("ahling-command-center", "deploy-tenant-resources", {"tenantId": "acme"}).result
    report_a = client.call("frontend-powerhouse", "analyze-components", {"directory": "src/a"}).result
    report_b = client.call("frontend-powerhouse", "analyze-components", {"directory": "src/b"}).result
    missing = client.call("lobbi-platform-manager", "create-tenant", {})

    assert prepared["issueKey"] == "PROJ-42" and prepared["status"]
    assert worked == {"issueKey": "PROJ-42", "status": "completed", "commits": worked["commits"]}
    assert pr["pullRequestUrl"].startswith("https://") and "proj" in pr["pullRequestUrl"]
    assert tenant["tenantId"] == "acme" and "acme" in realm["realmId"]
    assert len(resources["createdResources"]) == 3 and all("acme" in r for r in resources["createdResources"])
    assert report_a["target"] == "src/a" and report_a != report_b
    assert missing.error["code"] == "BAD_PARAMETERS"


def test_cli_request(broker: Broker, client: Client, workers: Workers) -> None:
    worker, _ = counting_worker(broker.frontend, "sdk-cli")
    worker.raw(lambda frames: frames[0].upper())
    workers.start(worker, client)
    if "request" not in main.commands:
        main.add_command(request_command)
    runner = CliRunner()
    base = ["--root", str(broker.root), "request", "--endpoint", broker.frontend]

    ok = runner.invoke(main, [*base, "sdk-cli", '{"command": "analyze-document", "parameters": {"text": "x y"}}'])
    failed = runner.invoke(main, [*base, "sdk-cli", '{"command": "fail"}'])
    raw = runner.invoke(main, [*base, "--raw", "sdk-cli", "hello"])
    timeout = runner.invoke(main, [*base, "--timeout", "0.3", "--retries", "0", "sdk-nobody", "{}"])
    from_config = runner.invoke(
        main, ["--root", str(broker.root), "request", "sdk-cli", '{"command": "analyze-document"}']
    )

    assert ok.exit_code == 0, ok.output
    assert env.decode(ok.output)["payload"]["result"]["words"] == 2
    assert failed.exit_code == 1 and "NOT_ALLOWED" in failed.output
    assert raw.exit_code == 0 and raw.output.strip() == "HELLO"
    assert timeout.exit_code == 1
    assert from_config.exit_code == 0, from_config.output
