"""Several brokers seen from their clients: the asyncio client fails over to the next broker with
the same messageId when the first is dead, and ``arbiter events --all`` hears every broker's event
bus, each line marked with its broker. Two real brokers on one PostgreSQL store, an SDK worker
connected to both, the command line as a process of its own."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import zmq
from broker_helpers import wait_until
from test_chain_faults import PLUGIN, Workers
from test_multi_broker import pg_url, served_by, two_brokers  # noqa: F401 (a fixture)

from arbiter.sdk.client import AsyncClient
from arbiter.wire import envelope as env

pytestmark = pytest.mark.e2e

ARBITER = Path(sys.executable).parent / "arbiter"


def test_the_async_client_fails_over_to_the_next_broker_with_the_same_message_id(tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    with two_brokers(tmp_path, pg_url) as (a, b):
        pool = Workers(SimpleNamespace(frontend=f"{a.frontend},{b.frontend}"), tmp_path)  # type: ignore[arg-type]
        try:
            pool.spawn()
            wait_until(lambda: served_by(a) and served_by(b), 20, what="the worker registered with both brokers")
            a.kill()
            requests = [env.new_request(PLUGIN, "one", {"value": f"v{n}"}, timeout_ms=5000) for n in range(3)]

            async def send() -> tuple[list[Any], Any]:
                async with AsyncClient([a.frontend, b.frontend], timeout=0.5, retries=2) as client:
                    first = await client.request(PLUGIN, requests[0])  # alone: the failover is this one's
                    rest = await asyncio.gather(*(client.request(PLUGIN, r) for r in requests[1:]))
                    return [first, *rest], client.stats

            replies, stats = asyncio.run(asyncio.wait_for(send(), 20))
        finally:
            pool.stop_all()
    assert [r.ok for r in replies] == [True] * 3, [r.error for r in replies]
    assert [r.envelope["correlationId"] for r in replies] == [r["messageId"] for r in requests]
    assert [r.result["value"] for r in replies] == ["v0", "v1", "v2"]
    assert replies[0].attempts == 2 and (stats.retries, stats.failovers) == (1, 1), stats
    assert [r.attempts for r in replies[1:]] == [1, 1], "the client stays with the broker that answered"
    ran = pool.counts()
    assert all(ran[r["messageId"]] == 1 for r in requests), ran


def _publish_until_heard(endpoints: dict[str, str], heard: Any, timeout: float = 15.0) -> None:
    """Publish one event through each broker's ``events_pub`` every 0.1 s (a subscriber that has
    just connected misses the first ones) until ``heard()``."""
    ctx = zmq.Context.instance()
    pubs = {}
    for name, url in endpoints.items():
        pubs[name] = ctx.socket(zmq.PUB)
        pubs[name].setsockopt(zmq.LINGER, 0)
        pubs[name].connect(url)
    try:
        deadline = time.monotonic() + timeout
        while not heard() and time.monotonic() < deadline:
            for name, sock in pubs.items():
                event = {"messageId": str(uuid.uuid4()), "timestamp": env.now_iso(), "messageType": "event",
                         "topic": "test/all-brokers", "payload": {"via": name}}  # fmt: skip
                sock.send_multipart([b"test/all-brokers", orjson.dumps(event)])
            time.sleep(0.1)
    finally:
        for sock in pubs.values():
            sock.close()


def test_events_all_hears_every_broker_and_marks_each_line_with_it(tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    with two_brokers(tmp_path, pg_url) as (a, b):
        command = [str(ARBITER), "--root", str(a.root), "events", "--all", "test/", "--json", "--timeout", "20"]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: list[dict[str, Any]] = []
        reader = threading.Thread(target=lambda: lines.extend(json.loads(line) for line in process.stdout), daemon=True)  # type: ignore[union-attr]
        reader.start()
        try:
            heard = lambda: {line["broker"] for line in lines} >= {"a", "b"}  # noqa: E731
            _publish_until_heard({"a": a.events_pub, "b": b.events_pub}, heard)
        finally:
            process.kill()
            process.wait(10)
            reader.join(5)
    assert {line["broker"] for line in lines} == {"a", "b"}, (lines, process.stderr.read() if process.stderr else "")
    assert all(line["event"]["payload"]["via"] == line["broker"] for line in lines), lines
    assert all(line["topic"] == "test/all-brokers" for line in lines)
