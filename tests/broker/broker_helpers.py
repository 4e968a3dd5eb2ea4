"""Shared by the broker tests (holds no tests): a broker with its own config, raw MDP sockets,
and a status probe."""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson
import zmq
from test_sdk_harness import Broker, launch_broker

from arbiter.sdk.client import Client
from arbiter.wire import envelope as env
from arbiter.wire.mdp import MDPC01, MDPW01, READY, REPLY, REQUEST


@contextmanager
def broker_with(
    tmp: Path, overrides: dict[str, Any] | None = None, project: Callable[[Path], None] | None = None
) -> Iterator[Broker]:
    """A broker subprocess on free ports (see ``launch_broker``), as a context manager."""
    yield from launch_broker(tmp, overrides, project)


def status(frontend: str) -> dict[str, Any]:
    with Client(frontend, timeout=5, retries=1) as client:
        return client.request("arbiter.status", env.new_request("arbiter.status", "status")).result


def dealer(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def recv(sock: zmq.Socket, timeout_s: float = 5.0) -> list[bytes] | None:
    return sock.recv_multipart() if sock.poll(int(timeout_s * 1000)) else None


def reply_envelope(frames: list[bytes]) -> dict[str, Any]:
    assert frames[:2] == [b"", MDPC01], frames[:3]
    return orjson.loads(frames[3])


class RawWorker:
    """A bare MDP worker on a DEALER: the test decides when (and whether) to answer."""

    def __init__(self, ctx: zmq.Context, endpoint: str, service: str, credit: int | None = None):
        self.sock = dealer(ctx, endpoint)
        ready = [b"", MDPW01, READY, service.encode()]
        if credit is not None:
            ready.append(str(credit).encode())
        self.sock.send_multipart(ready)

    def next_request(self, timeout_s: float = 5.0) -> tuple[bytes, list[bytes]] | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            frames = recv(self.sock, max(0.01, deadline - time.monotonic()))
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


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def wait_counter(frontend: str, name: str, above: int, timeout: float = 20.0) -> bool:
    """Wait until the broker's counter ``name`` exceeds ``above``."""
    return bool(wait_until(lambda: status(frontend)["counters"].get(name, 0) > above, timeout, interval=0.01))
