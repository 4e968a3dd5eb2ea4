"""Shared by the broker tests (holds no tests): a broker with its own config, raw MDP sockets,
a status probe, and waits on the broker's state (never on the clock alone)."""

from __future__ import annotations

import sqlite3
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson
import zmq
from test_sdk_harness import HEARTBEAT_S, REPO, WORKER_OPTIONS, Broker, launch_broker

from arbiter.project.snapshot import build_snapshot
from arbiter.sdk.client import Client
from arbiter.sdk.demo_workers import plugin_worker
from arbiter.wire import envelope as env
from arbiter.wire.mdp import HEARTBEAT, MDPC01, MDPW01, READY, REPLY, REQUEST


@contextmanager
def broker_with(
    tmp: Path, overrides: dict[str, Any] | None = None, project: Callable[[Path], None] | None = None
) -> Iterator[Broker]:
    """A broker subprocess on free ports (see ``launch_broker``), as a context manager."""
    yield from launch_broker(tmp, overrides, project)


def status(frontend: str) -> dict[str, Any]:
    with Client(frontend, timeout=5, retries=1) as client:
        return client.request("arbiter.status", env.new_request("arbiter.status", "status")).result


def dealer(ctx: zmq.Context, endpoint: str, source_port: int | None = None) -> zmq.Socket:
    """A DEALER connected to ``endpoint``; from ``source_port`` when given, so that the TCP
    connection can be found again (:func:`broker_closed_connection`)."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if source_port is not None:
        endpoint = endpoint.replace("tcp://", f"tcp://127.0.0.1:{source_port};", 1)
    sock.connect(endpoint)
    return sock


def recv(sock: zmq.Socket, timeout_s: float = 5.0) -> list[bytes] | None:
    return sock.recv_multipart() if sock.poll(int(timeout_s * 1000)) else None


def reply_envelope(frames: list[bytes]) -> dict[str, Any]:
    assert frames[:2] == [b"", MDPC01], frames[:3]
    return orjson.loads(frames[3])


class RawWorker:
    """A bare MDP worker on a DEALER: the test decides when (and whether) to answer. It sends no
    HEARTBEAT (the broker drops it after ``LIVENESS`` intervals) unless made with ``heartbeat``:
    then it heartbeats while it waits for a request and on :meth:`beat`, as a worker whose
    handler hangs still does."""

    def __init__(
        self,
        ctx: zmq.Context,
        endpoint: str,
        service: str,
        credit: int | None = None,
        source_port: int | None = None,
        heartbeat: bool = False,
    ):
        self.sock = dealer(ctx, endpoint, source_port)
        self.heartbeat = heartbeat
        ready = [b"", MDPW01, READY, service.encode()]
        if credit is not None:
            ready.append(str(credit).encode())
        self.sock.send_multipart(ready)

    def beat(self) -> None:
        self.sock.send_multipart([b"", MDPW01, HEARTBEAT])

    def next_request(self, timeout_s: float = 5.0) -> tuple[bytes, list[bytes]] | None:
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            if self.heartbeat:
                self.beat()
            frames = recv(self.sock, min(remaining, HEARTBEAT_S / 2) if self.heartbeat else max(0.01, remaining))
            if frames and frames[2] == REQUEST:
                return frames[3], frames[5:]
        return None

    def reply(self, address: bytes, body: list[bytes]) -> None:
        self.sock.send_multipart([b"", MDPW01, REPLY, address, b"", *body])

    def close(self) -> None:
        self.sock.close()


def state_rows(root: Path, sql: str) -> list[tuple]:
    """Read the broker's SQLite state directly, as an operator would."""
    with sqlite3.connect(root / ".arbiter" / "state.db") as db:
        return db.execute(sql).fetchall()


def rows_once(root: Path, sql: str, count: int = 1) -> list[tuple] | None:
    """:func:`state_rows`, once the query finds ``count`` rows or more (None before): a condition
    for :func:`wait_until`, since the broker writes its rows a batch at a time."""
    rows = state_rows(root, sql)
    return rows if len(rows) >= count else None


def wait_until(
    predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, *, what: str | None = None
) -> Any:
    """Poll ``predicate`` (the interval is only the polling pace) until it returns something true,
    and return that. At the deadline: with ``what``, fail the test saying what never happened;
    without, return the last (false) value for the caller's own assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    value = predicate()
    if not value and what is not None:
        raise AssertionError(f"gave up after {timeout:g}s waiting until {what} (last seen: {value!r})")
    return value


def wait_counter(frontend: str, name: str, above: int, timeout: float = 20.0) -> bool:
    """Wait until the broker's counter ``name`` exceeds ``above``."""
    return bool(wait_until(lambda: status(frontend)["counters"].get(name, 0) > above, timeout, interval=0.01))


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def broker_closed_connection(broker_port: int, peer_port: int) -> bool:
    """Whether the broker has closed its end of the TCP connection from ``peer_port`` (Linux:
    /proc/net/tcp). libzmq closes it when it has read the peer's end of stream, in the same step
    that tells the ROUTER the peer is gone; until then a message for the peer is queued to a
    connection about to vanish, and lost without a trace."""
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, remote, state = line.split()[1:4]
        if int(local.rsplit(":", 1)[1], 16) == broker_port and int(remote.rsplit(":", 1)[1], 16) == peer_port:
            return state not in ("01", "08")  # ESTABLISHED, CLOSE_WAIT: the broker still holds it open
    return True


def subscribed_topics(frontend: str) -> list[str]:
    """The (un)subscriptions the broker has applied, as ``arbiter status`` lists them."""
    return status(frontend)["events"]["subscriptions"]


def subscriber(ctx: zmq.Context, broker: Broker, *topics: str) -> zmq.Socket:
    """A SUB socket on the broker's event bus whose ``topics`` the broker has applied.

    A subscription travels to the broker after ``connect``, and events published before it
    arrives are not delivered (ZeroMQ's slow joiner). The broker lists the subscriptions it
    applied in its status; a topic of this socket's own (a marker nothing is published on) tells
    this socket's from another's: first the marker, alone, shows the connection is up; then the
    topics and a second marker go out in that order over it, so once the second is listed, the
    topics are in place."""
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    tag = uuid.uuid4().hex[:12]
    first, second = f"~probe/{tag}/connected", f"~probe/{tag}/subscribed"
    sock.setsockopt(zmq.SUBSCRIBE, first.encode())
    sock.connect(broker.events_sub)
    wait_until(lambda: first in subscribed_topics(broker.frontend), what=f"the broker listed the subscription {first}")
    for topic in (*topics, second):
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    wait_until(lambda: second in subscribed_topics(broker.frontend), what=f"the broker applied {topics}")
    for marker in (first, second):
        sock.setsockopt(zmq.UNSUBSCRIBE, marker.encode())
    return sock


def broker_log(broker: Broker) -> str:
    """What the running broker process has logged so far."""
    return (broker.log_dir / f"broker-{broker.starts}.log").read_text(errors="replace")


def wait_for_log(broker: Broker, text: str, timeout: float = 20.0) -> None:
    wait_until(lambda: text in broker_log(broker), timeout, what=f"the broker logged {text!r}")


def quick_retries(root: Path, plugin: str, retryable: list[str], breaker: dict[str, Any] | None = None) -> None:
    """Give ``plugin`` one fast retry (20–50 ms) on ``retryable`` errors (all, when empty), and the
    circuit breaker settings ``breaker`` (default: kept, but off), so a test's tries are quick."""
    path = root / "plugins" / plugin / ".claude-plugin" / "plugin.json"
    manifest = orjson.loads(path.read_bytes())
    handling = manifest["errorHandling"]
    handling["circuitBreaker"] = breaker or {**handling.get("circuitBreaker", {}), "enabled": False}
    handling["retryPolicy"] = {
        "maxRetries": 1,
        "backoff": "linear",
        "initialDelay": 20,
        "maxDelay": 50,
        "jitter": 0.1,
        "retryableErrors": retryable,
    }
    path.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))


@contextmanager
def shipped_workers(frontend: str, credit: int = 4) -> Iterator[list[Any]]:
    """A demo worker for each shipped plugin, started and joined, stopped at the end."""
    workers = [
        plugin_worker(p, frontend, delay=0.0, credit=credit, **WORKER_OPTIONS)
        for p in build_snapshot(REPO).plugins.values()
    ]
    for worker in workers:
        worker.start()
    try:
        with Client(frontend, timeout=2, retries=0) as client:
            wait_until(lambda: all(client.has_service(w.service) for w in workers), what="every demo worker joined")
        yield workers
    finally:
        for worker in workers:
            worker.stop(timeout=5)
