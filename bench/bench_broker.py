"""Broker speed on 127.0.0.1: round trips per second (pipelined clients) and sync latency, for the
Arbiter broker next to three yardsticks measured in the same run on the same machine:

  A  raw ``zmq.proxy(ROUTER, DEALER)``, the fastest a forwarder can be (C code, no protocol);
  B  a minimal Python ROUTER/ROUTER forwarder with an LRU queue of ready workers (one request
     per worker at a time, like plain MDP workers);
  B2 zmq.proxy's loop in Python, with the Arbiter broker's frame I/O: the floor for Python;
  C  the Arbiter broker serving a plain MDP service, workers with credit 1, with credit 50, with
     credit 50 and packed delivery (no MDP preamble on requests and replies), and with credit 50
     and batched delivery (packed, and the requests of a burst in one message, as the SDK's
     workers with credit ask for);
  C' the Arbiter broker with Prometheus metrics on (``metrics.address``), its ``/metrics``
     scraped every ``SCRAPE_EVERY_S`` through the whole run, next to the same broker with them
     off (credit 1, and credit 50 batched): what the metrics cost the hot path, as a ratio;
  D  ``arbiter.route``: a JSON envelope routed to a plugin's worker (credit 50, batched; cached
     and uncached decisions), everything the broker does per routed request included (e.g.
     logging the decision). Uncached decisions are measured three ways side by side: on the
     broker's loop (``deciders: 0``), and in one and in two decider processes.

Two measurements follow the tables, on brokers with deciders 0, 1 and 2 (an echo service and a
plugin's worker each): direct service alone and while four clients keep new texts coming to
``arbiter.route`` (what deciding costs everyone else), and the worst pause of the loop that one
0.9 MB message causes, seen by a client sending one echo request at a time.

Every peer (broker, workers, clients) is its own process, so nobody shares a GIL with the broker;
the process modes live in this file (``--mode``), and every peer reads and writes frames with the
cheapest calls pyzmq has (``send_all``/``recv_all``), so that the peers weigh as little as they
can and the ratios compare the forwarders. Numbers depend on the machine and on whatever else
runs on it: they are printed, never asserted, and the ratios are only meaningful because every
system is measured side by side in one run, in many short rounds whose order rotates, so that a
slow spell of a shared machine, or the system measured just before, favours no one.

Run: python bench/bench_broker.py [--quick] [--requests N] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import orjson
import yaml
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, percentile, table  # noqa: E402

THIS = Path(__file__).resolve()
BODY = b"x" * 200
WINDOW = 100
SYNC_ROUND_FACTOR = 4  # sync latency is measured in this many times more (and shorter) rounds
HEARTBEAT_S = 2.5
LIFETIME_S = 600.0  # a child outlives a crashed parent by at most this much
STARTUP_S = 60.0
CONFIG_DEADLINE_S = 60.0  # one measurement, clients included, never runs longer than this
ENVELOPE_TIMEOUT_MS = 600_000  # envelopes are built before the clock starts: they must not expire meanwhile
ECHO_SERVICE = b"echo"
PLUGIN = "fastapi-backend"
COMMAND = "scaffold-endpoint"
# What the command needs, given (a text that left it unsaid is answered NEEDS_INPUT, with no
# worker); one plugin's worker, as a plan's other phases have none here.
ROUTE_PARAMETERS = {"resource": "orders"}
ROUTE_TEXTS = (
    "Build a FastAPI endpoint with MongoDB and Keycloak auth",
    "Add a websocket endpoint to the FastAPI service",
    "Create a Pydantic model for MongoDB users in FastAPI",
    "Generate pytest tests for the FastAPI endpoints",
    "Scaffold a FastAPI REST endpoint for orders",
)
RAW = "A raw zmq.proxy"  # the yardstick every ratio divides by
PACKED_50 = "C arbiter, 50, packed"
BATCHED_50 = "C arbiter, 50, batched"  # what the direct-service goal is measured on
GRID = ((1, 1), (4, 1), (1, 2), (4, 2))  # (clients, workers), in the order workers are added
MDPC = b"MDPC01"
MDPW = b"MDPW01"
READY, REQUEST, REPLY, HEARTBEAT, DISCONNECT = b"\x01", b"\x02", b"\x03", b"\x04", b"\x05"
TOKEN_BYTES = 8
UNCACHED_GRID = ((1, 1), (4, 2))
UNCACHED_SCALE = 0.05
UNCACHED = {0: "D route, uncached, loop", 1: "D route, uncached, 1 decider", 2: "D route, uncached, 2 deciders"}
DECIDERS = (0, 1, 2)  # the broker.yaml ``deciders`` settings the mixed-load section compares
PAUSE_DECIDERS = (0, 2)
BACKGROUND_CLIENTS = 4  # routed clients that keep decisions running during a direct measurement
BACKGROUND_WINDOW = 20
BACKGROUND_RAMP_S = 0.3  # the routed clients run this long before the direct client starts
STOP_CHECK_EVERY = 16  # replies between a background client's looks at its stdin
BIG_BYTES = 900_000  # one message of the loop-pause measurement (the broker takes up to 1 MiB)
PAUSE_QUIET_S = 3.0  # the sync client runs this long before the big requests (the quiet window ends 0.5 s before)
PAUSE_WINDOW_S = 2.0
PAUSE_LEAD_S = 0.5  # each window ends (quiet) or starts (around) this long before the first big request
PAUSE_GAP_S = 0.3  # between the two big requests, so that each one's pause can be told apart
PAUSE_RUN_S = 5.5  # the sync client's whole run: the around window ends at 4.5 s
PAUSE_AIM_S = 0.05
SCRAPE_EVERY_S = 1.0  # a metrics-on broker's /metrics is read this often (Prometheus' default: every 15 s)
METRICS_ON = " metrics on"
METRICS_PAIRS = ("C arbiter, credit 1", BATCHED_50)  # each measured with metrics off and on
MIXED_DEADLINE_S = 10.0  # a direct client that is starved stops here; its rate counts what came back


# --------------------------------------------------------------------------------------------
# Child processes: forwarders, workers, clients. Each is a bounded loop that ends by itself.
# --------------------------------------------------------------------------------------------


_SEND, _RECV = zmq.backend.Socket.send, zmq.backend.Socket.recv
_MORE = int(zmq.SNDMORE)


def send_all(sock: zmq.Socket, frames: Sequence[bytes]) -> None:
    """``send_multipart`` without pyzmq's per-frame flag enums: 1.3 µs instead of 7.8 µs for six
    frames here. Every peer of every system (clients, workers) uses these, so what a peer costs
    is as small as it can be in Python and the ratios measure the forwarders, not pyzmq."""
    last = len(frames) - 1
    for index, frame in enumerate(frames):
        _SEND(sock, frame, _MORE if index < last else 0)


def recv_all(sock: zmq.Socket) -> list[bytes]:
    """``recv_multipart`` likewise (3.9 µs instead of 6.8 µs for six frames); honours RCVTIMEO."""
    frame = _RECV(sock, 0, False)
    parts = [frame.bytes]
    while frame.more:
        frame = _RECV(sock, 0, False)
        parts.append(frame.bytes)
    return parts


def announce(*words: object) -> None:
    """Tell the parent we are ready on stdout; the parent waits for this line before measuring."""
    print("READY", *words, flush=True)


def run_proxy(lifetime: float) -> None:
    """A: the proxy runs in C in a thread; the main thread only bounds the process's life."""
    ctx = zmq.Context()
    frontend, backend = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    front_port = frontend.bind_to_random_port("tcp://127.0.0.1")
    back_port = backend.bind_to_random_port("tcp://127.0.0.1")
    threading.Thread(target=zmq.proxy, args=(frontend, backend), daemon=True).start()
    announce(front_port, back_port)
    time.sleep(lifetime)
    os._exit(0)


def run_lru(lifetime: float) -> None:
    """B: the textbook load-balancing broker; the frontend is read only while a worker is free,
    so ZeroMQ's queues provide the back-pressure and the broker holds no request itself."""
    ctx = zmq.Context()
    frontend, backend = ctx.socket(zmq.ROUTER), ctx.socket(zmq.ROUTER)
    front_port = frontend.bind_to_random_port("tcp://127.0.0.1")
    back_port = backend.bind_to_random_port("tcp://127.0.0.1")
    both, back_only = zmq.Poller(), zmq.Poller()
    both.register(backend, zmq.POLLIN)
    both.register(frontend, zmq.POLLIN)
    back_only.register(backend, zmq.POLLIN)
    free: list[bytes] = []
    announce(front_port, back_port)
    deadline = time.monotonic() + lifetime
    while time.monotonic() < deadline:
        events = dict((both if free else back_only).poll(1000))
        if backend in events:
            frames = backend.recv_multipart()
            free.append(frames[0])
            if len(frames) > 2:  # a reply, not the READY announcement
                frontend.send_multipart(frames[1:])
        if frontend in events and free:
            backend.send_multipart([free.pop(0), *frontend.recv_multipart()])


def run_python_proxy(lifetime: float) -> None:
    """B2: zmq.proxy's loop written in Python (ROUTER to DEALER and back: no protocol, no
    bookkeeping), reading and sending frames the way the Arbiter broker does. The least a Python
    forwarder can spend per message, and what C, which also lets workers hold many requests,
    compares with."""
    from zmq.backend import zmq_poll

    from arbiter.wire.frames import recv_frames, send_frames

    ctx = zmq.Context()
    frontend, backend = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    for sock in (frontend, backend):
        sock.setsockopt(zmq.SNDHWM, 0)  # the clients' windows bound what is queued
    front_port = frontend.bind_to_random_port("tcp://127.0.0.1")
    back_port = backend.bind_to_random_port("tcp://127.0.0.1")
    watched = [(frontend, zmq.POLLIN), (backend, zmq.POLLIN)]
    announce(front_port, back_port)
    deadline = time.monotonic() + lifetime
    while time.monotonic() < deadline:
        zmq_poll(watched, 1000)
        for source, target in ((frontend, backend), (backend, frontend)):
            for _ in range(256):
                try:
                    frames = recv_frames(source)
                except zmq.Again:
                    break
                send_frames(target, frames)


def run_echo_worker(endpoint: str, announce_self: bool, lifetime: float) -> None:
    """A and B: echo every message as it came; for B it first says READY to join the LRU queue."""
    sock = zmq.Context().socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVTIMEO, 1000)
    sock.connect(endpoint)
    if announce_self:
        sock.send(b"READY")
    announce()
    deadline = time.monotonic() + lifetime
    while time.monotonic() < deadline:
        try:
            send_all(sock, recv_all(sock))
        except zmq.Again:
            continue


def route_result(body: bytes) -> bytes:
    """D: what the plugin's worker answers, a response envelope correlated to the request, built
    the way the SDK's workers build theirs."""
    from arbiter.wire.envelope import success_reply

    request = orjson.loads(body)
    command = (request.get("payload") or {}).get("command")
    return orjson.dumps(success_reply(request, PLUGIN, {"command": command}))


def run_mdp_worker(endpoint: str, service: str, credit: int, envelope: bool, delivery: str, lifetime: float) -> None:
    """C and D: a bare MDP/0.1 worker with the credit extension (and packed or batched delivery
    when ``delivery`` asks), heartbeating every 2.5 s. A packed request is [token + first body
    frame, ...] and a batched message [token + body, token + body, ...]: an echo sends either
    back as it came, and a batch is answered in one message."""
    sock = zmq.Context().socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVTIMEO, 250)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    options = [str(credit).encode(), *([delivery.encode()] if delivery else [])]
    send_all(sock, [b"", MDPW, READY, service.encode(), *options])
    announce()
    now = time.monotonic()
    deadline, next_beat = now + lifetime, now + HEARTBEAT_S
    while now < deadline:
        try:
            frames = recv_all(sock)
        except zmq.Again:
            frames = []
        if frames and frames[0]:  # packed or batched: with one-frame bodies (ours) each frame is token + body
            if envelope:
                frames = [frame[:TOKEN_BYTES] + route_result(frame[TOKEN_BYTES:]) for frame in frames]
            send_all(sock, frames)
        elif len(frames) >= 6 and frames[2] == REQUEST:
            body = [route_result(frames[5])] if envelope else frames[5:]
            send_all(sock, [b"", MDPW, REPLY, frames[3], b"", *body])
        elif len(frames) >= 3 and frames[2] == DISCONNECT:
            print("worker: DISCONNECT from broker", file=sys.stderr, flush=True)
        now = time.monotonic()
        if now >= next_beat:
            send_all(sock, [b"", MDPW, HEARTBEAT])
            next_beat = now + HEARTBEAT_S


@dataclass
class ClientPlan:
    """What one client process sends and how it recognises a good reply."""

    kind: str  # raw (A, B), mdp (C), route (D)
    service: bytes
    bodies: list[bytes]
    ids: set[str] = field(default_factory=set)  # the messageIds of routed requests

    def frames(self, index: int) -> list[bytes]:
        body = self.bodies[index % len(self.bodies)]
        return [b"", body] if self.kind == "raw" else [b"", MDPC, self.service, body]

    def good(self, reply: bytes) -> bool:
        """An echo must come back byte for byte; a routed reply must answer one of our requests
        (replies arrive in completion order) with success from the plugin."""
        if self.kind != "route":
            return reply == BODY
        envelope = orjson.loads(reply)
        payload = envelope.get("payload") or {}
        return (
            envelope.get("correlationId") in self.ids
            and payload.get("status") == "success"
            and (payload.get("result") or {}).get("plugin") == PLUGIN
        )


def route_bodies(count: int, unique: bool) -> list[bytes]:
    """Envelopes built before the clock starts; a unique text per request defeats the route cache."""
    from arbiter.wire.envelope import encode, new_request

    salt = uuid.uuid4().hex[:8]  # distinct per client process, so no two clients share a text either
    bodies = []
    for i in range(count):
        text = ROUTE_TEXTS[i % len(ROUTE_TEXTS)] + (f" #{salt}-{i}" if unique else "")
        envelope = new_request("arbiter.route", COMMAND, source="bench-client", timeout_ms=ENVELOPE_TIMEOUT_MS)
        envelope["payload"] = {"text": text, "command": COMMAND, "parameters": ROUTE_PARAMETERS, "collaborate": False}
        bodies.append(encode(envelope))
    return bodies


def client_plan(kind: str, service: str, count: int, unique: bool) -> ClientPlan:
    if kind != "route":
        return ClientPlan(kind, service.encode(), [BODY])
    bodies = route_bodies(count, unique)
    return ClientPlan(kind, service.encode(), bodies, {orjson.loads(b)["messageId"] for b in bodies})


def connect_client(endpoint: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVTIMEO, 1000)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def pipelined(
    sock: zmq.Socket, plan: ClientPlan, count: int, window: int, deadline: float, stoppable: bool = False
) -> dict[str, Any]:
    """Keep ``window`` requests outstanding. Echoes are all checked; routed replies one in 100 (parsing
    every one would measure the client's JSON parsing, not the broker). A ``stoppable`` client
    (background load) also ends when the parent writes STOP, drains what it still has in flight, and
    notes when each reply came, so the parent can count what fell within a window."""
    every = 100 if plan.kind == "route" else 1
    sent = received = bad = 0
    stopped = False
    times: list[float] = []
    start = time.perf_counter()
    while sent < min(window, count):
        send_all(sock, plan.frames(sent))
        sent += 1
    while received < count and time.monotonic() < deadline:
        try:
            frames = recv_all(sock)
        except zmq.Again:
            if stoppable and stop_asked():
                stopped = True
                break
            continue
        bad += received % every == 0 and not plan.good(frames[-1])
        received += 1
        if stoppable:
            times.append(time.perf_counter())
            if received % STOP_CHECK_EVERY == 0 and stop_asked():
                stopped = True
                break
        if sent < count:
            send_all(sock, plan.frames(sent))
            sent += 1
    end = time.perf_counter()
    if stoppable:  # what is answered after the stop is waited for, not counted
        outstanding, drain = sent - received, time.monotonic() + 5.0
        while outstanding and receive(sock, drain) is not None:
            outstanding -= 1
    result = {"count": received, "bad": bad, "start": start, "end": end}
    return {**result, "stopped": stopped, "times": times} if stoppable else result


def stop_asked() -> bool:
    """Whether the parent wrote STOP on our stdin (without blocking)."""
    return bool(select.select([sys.stdin], [], [], 0)[0]) and sys.stdin.readline().strip() == "STOP"


def synchronous(sock: zmq.Socket, plan: ClientPlan, count: int, deadline: float) -> dict[str, Any]:
    """One request at a time; every reply is checked, after its latency is taken."""
    latencies: list[float] = []
    bad = 0
    start = time.perf_counter()
    for i in range(count):
        sent = time.perf_counter()
        send_all(sock, plan.frames(i))
        frames = receive(sock, deadline)
        if frames is None:
            break
        latencies.append(time.perf_counter() - sent)
        bad += not plan.good(frames[-1])
    return {"count": len(latencies), "bad": bad, "start": start, "end": time.perf_counter(), "latencies": latencies}


def receive(sock: zmq.Socket, deadline: float) -> list[bytes] | None:
    """The next message, or None once ``deadline`` has passed without one."""
    while time.monotonic() < deadline:
        try:
            return recv_all(sock)
        except zmq.Again:
            continue
    return None


def run_client(args: argparse.Namespace) -> None:
    """Warm up, say READY, wait for GO on stdin so all clients start together, measure, print JSON."""
    plan = client_plan(args.kind, args.service, args.requests + args.warmup, args.unique)
    sock = connect_client(args.endpoint)
    deadline = time.monotonic() + args.deadline
    warm = synchronous(sock, plan, args.warmup, deadline) if args.warmup else {"count": 0, "bad": 0}
    plan.bodies = plan.bodies[args.warmup :] if len(plan.bodies) > 1 else plan.bodies
    announce(warm["count"], warm["bad"])
    if sys.stdin.readline().strip() != "GO":
        return
    deadline = time.monotonic() + args.deadline
    if args.window > 1:
        result = pipelined(sock, plan, args.requests, args.window, deadline, args.until_stop)
    else:
        result = synchronous(sock, plan, args.requests, deadline)
    print(json.dumps(result), flush=True)


def run_pause_client(endpoint: str, seconds: float) -> None:
    """The loop-pause probe: echo requests one at a time for ``seconds`` after GO, each noted as
    (sent, latency) on the system-wide monotonic clock, which the big-message client shares."""
    plan = ClientPlan("mdp", ECHO_SERVICE, [BODY])
    sock = connect_client(endpoint)
    warm = synchronous(sock, plan, 200, time.monotonic() + CONFIG_DEADLINE_S)
    announce(warm["count"], warm["bad"])
    if sys.stdin.readline().strip() != "GO":
        return
    end = time.monotonic() + seconds
    samples: list[tuple[float, float]] = []
    bad = 0
    while time.monotonic() < end and len(samples) < 200_000:
        sent = time.monotonic()
        send_all(sock, plan.frames(0))
        frames = receive(sock, end + CONFIG_DEADLINE_S)
        if frames is None:
            break
        samples.append((sent, time.monotonic() - sent))
        bad += frames[-1] != BODY
    print(json.dumps({"samples": samples, "bad": bad}), flush=True)


def big_bodies(size: int) -> list[tuple[str, bytes]]:
    """Two ``arbiter.route`` requests of about ``size`` bytes each, both new to the broker: one
    whose text is that long, and one with a short text and the bulk in many small fields of
    ``headers`` and ``parameters`` (what every reply copies, and the worker receives)."""
    from arbiter.wire.envelope import encode, new_request

    salt = uuid.uuid4().hex[:8]
    words = (ROUTE_TEXTS[0] + ". ") * (size // (len(ROUTE_TEXTS[0]) + 2) + 1)
    text = f"#{salt} {words}"[:size]
    long_text = new_request("arbiter.route", COMMAND, source="bench-client", timeout_ms=ENVELOPE_TIMEOUT_MS)
    long_text["payload"] = {"text": text, "command": COMMAND, "parameters": ROUTE_PARAMETERS, "collaborate": False}
    filler = "abcdefghijklmnopqrstuvwxyz0123456789"
    fields = size // len(f'"x-bench-000000":"{filler}","field000000":"{filler}",')
    headers = {f"x-bench-{i:06d}": filler for i in range(fields)}
    many = new_request("arbiter.route", COMMAND, source="bench-client", timeout_ms=ENVELOPE_TIMEOUT_MS, headers=headers)
    parameters = {f"field{i:06d}": filler for i in range(fields)}
    parameters.update(ROUTE_PARAMETERS)
    many["payload"] = {"text": f"{ROUTE_TEXTS[1]} #{salt}", "command": COMMAND, "parameters": parameters,
                       "collaborate": False}  # fmt: skip
    return [("text", encode(long_text)), ("fields", encode(many))]


def run_big_client(endpoint: str, size: int) -> None:
    """The loop-pause load: after GO, the two big requests one after the other, each answered
    before the next; prints when each was sent and answered, and how."""
    bodies = big_bodies(size)
    sock = connect_client(endpoint)
    announce()
    if sys.stdin.readline().strip() != "GO":
        return
    done = []
    for index, (what, body) in enumerate(bodies):
        if index:
            time.sleep(PAUSE_GAP_S)
        sent = time.monotonic()
        send_all(sock, [b"", MDPC, b"arbiter.route", body])
        frames = receive(sock, sent + CONFIG_DEADLINE_S)
        received = time.monotonic()
        outcome = "no reply"
        if frames is not None:
            payload = orjson.loads(frames[-1]).get("payload") or {}
            plugin = (payload.get("result") or {}).get("plugin")
            outcome = "ok" if payload.get("status") == "success" and plugin == PLUGIN else str(payload)[:200]
        done.append({"what": what, "bytes": len(body), "sent": sent, "received": received, "outcome": outcome})
    print(json.dumps({"requests": done}), flush=True)


# --------------------------------------------------------------------------------------------
# The parent: starts processes, runs the grid, prints tables, kills everything it started.
# --------------------------------------------------------------------------------------------


@dataclass
class Child:
    """A child process speaking our line protocol on stdout; stderr goes to a log for post-mortems."""

    name: str
    process: subprocess.Popen
    log: Path
    _buffer: bytes = b""

    def line(self, timeout: float) -> str:
        """The next stdout line, waiting at most ``timeout`` s; fails loudly with the child's log."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.name}: no answer within {timeout:.0f}s\n{self.log_tail()}")
            ready, _, _ = select.select([self.process.stdout], [], [], left)
            if ready:
                chunk = os.read(self.process.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError(f"{self.name}: exited with {self.process.wait()}\n{self.log_tail()}")
                self._buffer += chunk
        text, self._buffer = self._buffer.split(b"\n", 1)
        return text.decode()

    def send(self, text: str) -> None:
        self.process.stdin.write(text.encode() + b"\n")
        self.process.stdin.flush()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the bench dies, even by SIGKILL, so no
    broker (which has no lifetime of its own) is left holding ports."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class Processes:
    """Every process this run started, so all of them die at the end whatever happened."""

    logs: Path
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, command: Sequence[str], env: dict[str, str] | None = None, talks: bool = True) -> Child:
        """``talks``: the child speaks our line protocol; otherwise its stdout goes to the log too,
        so a chatty program never blocks on a pipe nobody reads."""
        log = self.logs / f"{name}-{uuid.uuid4().hex[:8]}.log"
        with open(log, "wb") as err:
            process = subprocess.Popen(
                list(command),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE if talks else err,
                stderr=err,
                cwd=ROOT,
                env={**os.environ, **(env or {})},
                bufsize=0,
                preexec_fn=die_with_parent if sys.platform == "linux" else None,
            )
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def mode(self, name: str, *args: object) -> Child:
        return self.start(name, [sys.executable, str(THIS), "--mode", *map(str, args)])

    def stop(self, child: Child) -> None:
        """SIGTERM, then SIGKILL after a grace period: a broker gets the chance to exit cleanly."""
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
            try:
                child.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait(timeout=5)
        for stream in (child.process.stdin, child.process.stdout):
            if stream:
                stream.close()
        if child in self.children:
            self.children.remove(child)

    def stop_all(self) -> None:
        for child in list(reversed(self.children)):
            try:
                self.stop(child)
            except Exception as exc:  # keep killing the others
                print(f"could not stop {child.name}: {exc}", file=sys.stderr)


@dataclass
class Result:
    """One measurement: aggregate round trips/s over all clients, or the sync latency list."""

    count: int = 0
    bad: int = 0
    seconds: float = 0.0
    wanted: int = 0  # round trips asked for; fewer in ``count`` means a client hit its deadline
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


@dataclass
class Target:
    """How to reach a system under test: where clients connect and what they send."""

    endpoint: str
    kind: str
    service: str = ""
    unique: bool = False


def start_client(
    procs: Processes,
    target: Target,
    requests: int,
    window: int,
    warmup: int,
    until_stop: bool = False,
    deadline: float = CONFIG_DEADLINE_S,
) -> Child:
    return procs.mode(
        "client",
        "client",
        "--kind",
        target.kind,
        "--endpoint",
        target.endpoint,
        "--service",
        target.service,
        "--requests",
        requests,
        "--window",
        window,
        "--warmup",
        warmup,
        "--deadline",
        deadline,
        *(["--unique"] if target.unique else []),
        *(["--until-stop"] if until_stop else []),
    )


def run_clients(procs: Processes, target: Target, clients: int, requests: int, window: int, warmup: int) -> Result:
    """Start the clients, let them warm up, release them together, add up what they did."""
    per_client = max(1, requests // clients)
    started = [start_client(procs, target, per_client, window, warmup) for _ in range(clients)]
    try:
        for child in started:
            child.line(CONFIG_DEADLINE_S)
        for child in started:
            child.send("GO")
        outcomes = [json.loads(child.line(CONFIG_DEADLINE_S + 10)) for child in started]
    finally:
        for child in started:
            procs.stop(child)
    return combined(outcomes, per_client * clients)


def combined(outcomes: list[dict[str, Any]], wanted: int) -> Result:
    seconds = max(o["end"] for o in outcomes) - min(o["start"] for o in outcomes)
    latencies = [x for o in outcomes for x in o.get("latencies", [])]
    total = sum(o["count"] for o in outcomes)
    bad = sum(o["bad"] for o in outcomes)
    return Result(count=total, bad=bad, seconds=seconds, wanted=wanted, latencies=latencies)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_project(root: Path, endpoints: dict[str, str], overrides: dict[str, Any] | None = None) -> Path:
    """A private copy of the shipped project: our ports, default heartbeats, no file watching, and
    ``overrides`` (top-level keys of broker.yaml, e.g. ``{"deciders": 2}``)."""
    for name in ("plugins", "rules", "configs"):
        shutil.copytree(ROOT / name, root / name)
    config_path = root / "configs" / "broker.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["endpoints"] = endpoints
    config.setdefault("reload", {})["watch"] = False
    config.update(overrides or {})
    config_path.write_text(yaml.safe_dump(config))
    return root


def mmi(endpoint: str, service: str, deadline: float, alive: Callable[[], bool]) -> bytes:
    """Ask the broker whether ``service`` has workers; retries on a fresh socket until it answers."""
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("broker exited")
        sock = connect_client(endpoint)
        try:
            sock.send_multipart([b"", MDPC, b"mmi.service", service.encode()])
            if sock.poll(500):
                return sock.recv_multipart()[-1]
        finally:
            sock.close()
    raise RuntimeError(f"no MMI answer from {endpoint}")


@dataclass
class System:
    """A system under test: how to start it and its workers, and what its clients talk to."""

    name: str
    start: Callable[[Processes, Path], Target]
    add_worker: Callable[[Processes, Target], None]
    grid: Sequence[tuple[int, int]] = GRID
    scale: float = 1.0  # fraction of the request counts (uncached routing is slow by design)


def start_forwarder(mode: str) -> Callable[[Processes, Path], Target]:
    def start(procs: Processes, tmp: Path) -> Target:
        child = procs.mode(mode, mode)
        _, front, back = child.line(STARTUP_S).split()
        return Target(f"tcp://127.0.0.1:{front}", "raw", service=f"tcp://127.0.0.1:{back}")

    return start


def add_echo_worker(announce_self: bool) -> Callable[[Processes, Target], None]:
    def add(procs: Processes, target: Target) -> None:
        procs.mode("echo-worker", "echo-worker", target.service, int(announce_self)).line(STARTUP_S)
        time.sleep(0.2)  # the TCP handshake completes after connect() returns

    return add


@dataclass
class Scraper:
    """Reads a broker's /metrics every ``SCRAPE_EVERY_S`` on a thread of the parent, as Prometheus
    would (more often), until the run ends."""

    url: str
    stop: threading.Event = field(default_factory=threading.Event)
    scrapes: int = 0
    failures: int = 0

    def run(self) -> None:
        while not self.stop.wait(SCRAPE_EVERY_S):
            try:
                with urllib.request.urlopen(self.url, timeout=5) as answer:
                    answer.read()
                self.scrapes += 1
            except OSError:
                self.failures += 1


SCRAPERS: dict[str, Scraper] = {}  # by the frontend of the broker they scrape


def start_arbiter(
    kind: str, service: str, unique: bool = False, config: dict[str, Any] | None = None, metrics: bool = False
) -> Callable[[Processes, Path], Target]:
    """``config``: broker.yaml settings of this broker's own (the shipped file's otherwise);
    ``metrics``: serve /metrics on a free port, scraped by a :class:`Scraper`."""

    def start(procs: Processes, tmp: Path) -> Target:
        ports = [free_port() for _ in range(3)]
        urls = [f"tcp://127.0.0.1:{p}" for p in ports]
        settings = dict(config or {})
        metrics_url = ""
        if metrics:
            metrics_port = free_port()
            settings["metrics"] = {"address": f"127.0.0.1:{metrics_port}"}
            metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        project = make_project(
            tmp / f"project-{uuid.uuid4().hex[:8]}", dict(zip(("frontend", "events_pub", "events_sub"), urls)), settings
        )
        command = [
            sys.executable,
            str(ROOT / "broker.py"),
            "--root",
            str(project),
            "--frontend",
            urls[0],
            "--events-pub",
            urls[1],
            "--events-sub",
            urls[2],
        ]
        broker = procs.start("broker", command, env={"PYTHONUNBUFFERED": "1"}, talks=False)
        try:
            mmi(urls[0], "mmi.service", time.monotonic() + STARTUP_S, lambda: broker.process.poll() is None)
        except RuntimeError as exc:
            tail = broker.log_tail(15).strip().splitlines() or ["(no output)"]
            rc = broker.process.poll()
            raise RuntimeError("\n".join([f"{exc} (exit code {rc}): {tail[-1]}", *tail])) from None
        wait_for_deciders(urls[0], time.monotonic() + STARTUP_S)
        if metrics_url:
            scraper = SCRAPERS[urls[0]] = Scraper(metrics_url)
            threading.Thread(target=scraper.run, name="scraper", daemon=True).start()
        return Target(urls[0], kind, service, unique)

    return start


def wait_for_deciders(endpoint: str, deadline: float) -> None:
    """Until every decider the broker started serves: before that, the broker decides new texts
    on its loop, and a decider still loading the project takes a core from the measurement."""
    while time.monotonic() < deadline:
        status = arbiter_status(endpoint)
        wanted = ((status or {}).get("deciders") or {}).get("processes", 0)
        if status is not None and decider_service(status).get("workers", 0) >= wanted:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the deciders of {endpoint} did not all come up within {STARTUP_S:.0f}s")


def decider_service(status: dict[str, Any]) -> dict[str, Any]:
    """The deciders' service as the broker's status shows it (its real name holds a secret)."""
    return (status.get("services") or {}).get("arbiter.decide") or {}


def add_mdp_worker(credit: int, envelope: bool, delivery: str = "") -> Callable[[Processes, Target], None]:
    def add(procs: Processes, target: Target) -> None:
        service = PLUGIN if envelope else target.service
        options = (credit, int(envelope), delivery or "mdp")
        procs.mode("mdp-worker", "mdp-worker", target.endpoint, service, *options).line(STARTUP_S)
        deadline = time.monotonic() + STARTUP_S
        while mmi(target.endpoint, service, deadline, lambda: True) != b"200":
            time.sleep(0.05)
        time.sleep(0.2)  # a second worker is not visible through MMI; give its READY time to land

    return add


def systems() -> list[System]:
    echo = ECHO_SERVICE.decode()
    return [
        System(RAW, start_forwarder("proxy"), add_echo_worker(False)),
        System("B python LRU", start_forwarder("lru"), add_echo_worker(True)),
        System("B2 python proxy", start_forwarder("pyproxy"), add_echo_worker(False)),
        System("C arbiter, credit 1", start_arbiter("mdp", echo), add_mdp_worker(1, False)),
        System("C arbiter, credit 50", start_arbiter("mdp", echo), add_mdp_worker(50, False)),
        System(PACKED_50, start_arbiter("mdp", echo), add_mdp_worker(50, False, "packed")),
        System(BATCHED_50, start_arbiter("mdp", echo), add_mdp_worker(50, False, "batched")),
        System("C arbiter, credit 1" + METRICS_ON, start_arbiter("mdp", echo, metrics=True), add_mdp_worker(1, False)),
        System(BATCHED_50 + METRICS_ON, start_arbiter("mdp", echo, metrics=True), add_mdp_worker(50, False, "batched")),
        System(
            "D route, cached", start_arbiter("route", "arbiter.route"), add_mdp_worker(50, True, "batched"), scale=0.5
        ),
        *(
            System(
                name,
                start_arbiter("route", "arbiter.route", unique=True, config={"deciders": count}),
                add_mdp_worker(50, True, "batched"),
                grid=UNCACHED_GRID,
                scale=UNCACHED_SCALE,
            )
            for count, name in UNCACHED.items()
        ),
    ]


@dataclass
class Measured:
    """What one system produced: throughput per (clients, workers), and its sync latency."""

    rates: dict[tuple[int, int], Result] = field(default_factory=dict)
    sync: Result | None = None
    status: dict[str, Any] | None = None  # the Arbiter broker's own account (arbiter.status), read afterwards
    error: str = ""
    scrapes: int | None = None  # with metrics on: /metrics reads that succeeded during the run


@dataclass
class Live:
    """A started system, and how many workers it has so far (workers are only ever added, so no
    measurement meets a worker that has just died)."""

    system: System
    target: Target
    measured: Measured
    workers: int = 0

    def grow(self, procs: Processes, workers: int) -> None:
        while self.workers < workers:
            self.system.add_worker(procs, self.target)
            self.workers += 1


def merge(total: Result | None, part: Result) -> Result:
    """Rounds add up: the rate of the sum is all round trips over all measured seconds."""
    if total is None:
        return part
    return Result(
        count=total.count + part.count,
        bad=total.bad + part.bad,
        seconds=total.seconds + part.seconds,
        wanted=total.wanted + part.wanted,
        latencies=total.latencies + part.latencies,
    )


def measure_all(live: list[Live], procs: Processes, requests: int, sync_count: int, rounds: int) -> None:
    """Each step is measured on every system in turn, in several rounds whose order rotates, so
    that a slow spell of this shared machine lands on all systems alike; sync latency, the most
    sensitive to such spells, gets four times the rounds. A system that fails keeps what it
    measured before and drops out."""
    steps = [(1, 1, 1, rounds * SYNC_ROUND_FACTOR), *((c, w, WINDOW, rounds) for c, w in GRID)]
    for clients, workers, window, step_rounds in steps:
        started = time.monotonic()
        for index in range(step_rounds):
            shift = index % len(live)
            for item in [x for x in live[shift:] + live[:shift] if not x.measured.error]:
                if window > 1 and (clients, workers) not in item.system.grid:
                    continue
                total = sync_count if window == 1 else requests
                count = max(50, int(total * item.system.scale) // step_rounds)
                warmup = min(200, max(20, count // (4 if window == 1 else 10)))
                try:
                    item.grow(procs, workers)
                    part = run_clients(procs, item.target, clients, count, window, warmup)
                except Exception as exc:
                    item.measured.error = f"failed: {exc}"
                    continue
                if window == 1:
                    item.measured.sync = merge(item.measured.sync, part)
                else:
                    item.measured.rates[(clients, workers)] = merge(item.measured.rates.get((clients, workers)), part)
        step = "sync" if window == 1 else f"{clients}c/{workers}w"
        print(f"  {step}: {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
    for item in live:
        if item.target.kind != "raw" and not item.measured.error:
            item.measured.status = settled_status(item.target.endpoint)
        scraper = SCRAPERS.get(item.target.endpoint)
        if scraper is not None:
            item.measured.scrapes = scraper.scrapes


def settled_status(endpoint: str, deadline_s: float = 5.0) -> dict[str, Any] | None:
    """The broker's status once its decision writer has caught up (it writes in batches, a
    moment after the replies), so the counters below cover every request measured."""
    deadline = time.monotonic() + deadline_s
    status = arbiter_status(endpoint)
    while status is not None and time.monotonic() < deadline:
        time.sleep(0.3)
        again = arbiter_status(endpoint)
        if again is None or _written(again) == _written(status):
            return again or status
        status = again
    return status


def _written(status: dict[str, Any]) -> Any:
    return ((status.get("writers") or {}).get("decisions") or {}).get("written")


def arbiter_status(endpoint: str) -> dict[str, Any] | None:
    """The broker's counters (route cache hits, decision log writes) tell whether a run measured
    what it claims to, e.g. that the uncached run really missed the cache."""
    from arbiter.wire.envelope import encode, new_request

    sock = connect_client(endpoint)
    try:
        sock.send_multipart([b"", MDPC, b"arbiter.status", encode(new_request("arbiter.status", "status"))])
        if not sock.poll(5000):
            return None
        reply = orjson.loads(sock.recv_multipart()[-1])
        return (reply.get("payload") or {}).get("result")
    except (ValueError, zmq.ZMQError):
        return None
    finally:
        sock.close()


# --------------------------------------------------------------------------------------------
# Decisions running: what deciding new texts costs direct service, and how long the loop stalls.
# --------------------------------------------------------------------------------------------


@dataclass
class Mixed:
    """One broker of the mixed-load section (echo service and the plugin's worker, credit 50
    batched), by its ``deciders`` setting: direct service alone, and while routed clients keep
    new texts coming."""

    deciders: int
    target: Target | None = None
    alone: Result | None = None
    loaded: Result | None = None
    routed: int = 0  # routed replies that came back while the loaded direct client ran
    routed_seconds: float = 0.0
    routed_bad: int = 0
    notes: list[str] = field(default_factory=list)
    status: dict[str, Any] | None = None
    error: str = ""

    @property
    def routed_rate(self) -> float:
        return self.routed / self.routed_seconds if self.routed_seconds else 0.0


@dataclass
class Pause:
    """The loop-pause probe on one broker: sync echo latencies in the quiet window and in the one
    around the big requests (all rounds), the worst of each round, and the big requests."""

    quiet: list[float] = field(default_factory=list)
    around: list[float] = field(default_factory=list)
    quiet_max: list[float] = field(default_factory=list)
    around_max: list[float] = field(default_factory=list)
    big: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # what -> [(round trip, worst echo)]
    notes: list[str] = field(default_factory=list)
    error: str = ""


def start_mixed_brokers(procs: Processes, tmp: Path) -> dict[int, Mixed]:
    """One broker per ``deciders`` setting, each with a batched credit-50 echo worker and a
    worker of the plugin routed requests go to."""
    runs = {}
    for count in DECIDERS:
        run = runs[count] = Mixed(count)
        try:
            target = start_arbiter("mdp", ECHO_SERVICE.decode(), config={"deciders": count})(procs, tmp)
            add_mdp_worker(50, False, "batched")(procs, target)
            add_mdp_worker(50, True, "batched")(procs, target)
            run.target = target
        except Exception as exc:
            run.error = f"failed: {exc}"
    return runs


def rotated(items: list[Any], index: int) -> list[Any]:
    shift = index % len(items) if items else 0
    return items[shift:] + items[:shift]


def measure_mixed(procs: Processes, runs: dict[int, Mixed], direct: int, background: int, rounds: int) -> None:
    """Direct service alone and with decisions running, on every broker in turn, in rounds whose
    order rotates (and whose two phases swap), like the main tables."""
    for index in range(rounds):
        for run in rotated([r for r in runs.values() if r.target and not r.error], index):
            assert run.target is not None
            echo = Target(run.target.endpoint, "mdp", ECHO_SERVICE.decode())
            for phase in ("alone", "loaded") if index % 2 == 0 else ("loaded", "alone"):
                try:
                    if phase == "alone":
                        run.alone = merge(run.alone, direct_alone(procs, echo, direct))
                    else:
                        direct_under_load(procs, run, direct, background)
                        settled_status(run.target.endpoint)  # the decisions still to be written, before what follows
                except Exception as exc:
                    run.error = f"failed: {exc}"
                    break
        print(f"  mixed load, round {index + 1}", file=sys.stderr, flush=True)
    for run in runs.values():
        if run.target and not run.error:
            run.status = settled_status(run.target.endpoint)


def direct_alone(procs: Processes, echo: Target, direct: int) -> Result:
    prober = start_client(procs, echo, direct, WINDOW, 200, deadline=MIXED_DEADLINE_S)
    try:
        prober.line(CONFIG_DEADLINE_S)
        prober.send("GO")
        return combined([json.loads(prober.line(CONFIG_DEADLINE_S + 10))], direct)
    finally:
        procs.stop(prober)


def direct_under_load(procs: Processes, run: Mixed, direct: int, background: int) -> None:
    """The direct client runs while routed clients (new texts, a window each) keep the broker
    deciding; they start first, run until told to stop, and the routed replies that came back
    while the direct client ran are counted."""
    assert run.target is not None
    endpoint = run.target.endpoint
    route = Target(endpoint, "route", "arbiter.route", unique=True)
    loaders = [
        start_client(procs, route, background, BACKGROUND_WINDOW, 20, until_stop=True)
        for _ in range(BACKGROUND_CLIENTS)
    ]
    echo = Target(endpoint, "mdp", ECHO_SERVICE.decode())
    prober = start_client(procs, echo, direct, WINDOW, 200, deadline=MIXED_DEADLINE_S)
    started = [*loaders, prober]
    try:
        for child in started:
            child.line(CONFIG_DEADLINE_S)
        for child in loaders:
            child.send("GO")
        time.sleep(BACKGROUND_RAMP_S)
        prober.send("GO")
        mine = json.loads(prober.line(CONFIG_DEADLINE_S + 10))
        for child in loaders:
            child.send("STOP")
        theirs = [json.loads(child.line(CONFIG_DEADLINE_S + 10)) for child in loaders]
    finally:
        for child in started:
            procs.stop(child)
    run.loaded = merge(run.loaded, combined([mine], direct))
    run.routed += sum(sum(mine["start"] <= t <= mine["end"] for t in o["times"]) for o in theirs)
    run.routed_seconds += mine["end"] - mine["start"]
    run.routed_bad += sum(o["bad"] for o in theirs)
    if any(not o["stopped"] or o["end"] < mine["end"] for o in theirs):
        run.notes.append("routed load ended before the direct client")


def measure_pauses(procs: Processes, runs: dict[int, Mixed], rounds: int) -> dict[int, Pause]:
    """The loop-pause probe on the brokers with decisions on the loop and with two deciders, in
    rounds whose order rotates; each round sends new big requests."""
    pauses = {count: Pause() for count in PAUSE_DECIDERS if count in runs}
    for run in runs.values():  # what the mixed section left (decisions to write) must not be measured here
        if run.target and not run.error and run.deciders in pauses:
            settled_status(run.target.endpoint)
    for index in range(rounds):
        for count in rotated(list(pauses), index):
            run, pause = runs[count], pauses[count]
            if run.target is None or run.error or pause.error:
                pause.error = pause.error or run.error or "no broker"
                continue
            try:
                probe_pause(procs, run.target.endpoint, pause)
            except Exception as exc:
                pause.error = f"failed: {exc}"
        print(f"  loop pause, round {index + 1}", file=sys.stderr, flush=True)
    return pauses


def probe_pause(procs: Processes, endpoint: str, pause: Pause) -> None:
    """One round: the sync echo client runs alone for a while, then the two big requests go
    (each answered before the next); the windows are cut out of its samples afterwards."""
    probe = procs.mode("pause-client", "pause-client", endpoint, PAUSE_RUN_S)
    heavy = procs.mode("big-client", "big-client", endpoint, BIG_BYTES)
    try:
        probe.line(CONFIG_DEADLINE_S)
        heavy.line(CONFIG_DEADLINE_S)
        probe.send("GO")
        time.sleep(PAUSE_QUIET_S)
        heavy.send("GO")
        sent = json.loads(heavy.line(2 * CONFIG_DEADLINE_S + 10))["requests"]
        probed = json.loads(probe.line(PAUSE_RUN_S + CONFIG_DEADLINE_S + 10))
    finally:
        for child in (probe, heavy):
            procs.stop(child)
    samples = probed["samples"]
    if probed["bad"]:
        pause.notes.append(f"{probed['bad']} bad echoes")
    first = sent[0]["sent"]
    quiet_from, around_from = first - PAUSE_LEAD_S - PAUSE_WINDOW_S, first - PAUSE_LEAD_S
    quiet = [lat for at, lat in samples if quiet_from <= at < around_from]
    around = [lat for at, lat in samples if around_from <= at < around_from + PAUSE_WINDOW_S]
    if not quiet or not around:
        raise RuntimeError("the sync client measured nothing in one of the windows")
    pause.quiet += quiet
    pause.around += around
    pause.quiet_max.append(max(quiet))
    pause.around_max.append(max(around))
    for request in sent:
        overlapping = [lat for at, lat in samples if at <= request["received"] and at + lat >= request["sent"]]
        worst = max(overlapping, default=0.0)
        pause.big.setdefault(request["what"], []).append((request["received"] - request["sent"], worst))
        if request["outcome"] != "ok":
            pause.notes.append(f"{request['what']}: {request['outcome']}")
        if request["received"] > around_from + PAUSE_WINDOW_S:
            pause.notes.append(f"{request['what']} answered after the window")
    if samples[-1][0] < around_from + PAUSE_WINDOW_S:
        pause.notes.append("the sync client stopped before the window ended")


def report_mixed(runs: dict[int, Mixed], direct: int, rounds: int) -> None:
    rows = []
    for count, run in runs.items():
        share = f"{run.loaded.rate / run.alone.rate:.2f}x" if run.alone and run.loaded and run.alone.rate else "-"
        phases = (("alone", run.alone), ("with", run.loaded))
        short = [f"{what} {r.count:,} of {r.wanted:,}" for what, r in phases if r and r.count < r.wanted]
        if short:
            run.notes.append(f"direct stopped at its {MIXED_DEADLINE_S:.0f} s deadline: {', '.join(short)}")
        rows.append(
            [
                decider_label(count),
                f"{run.alone.rate:,.0f}" if run.alone else "-",
                f"{run.loaded.rate:,.0f}" if run.loaded else "-",
                share,
                f"{run.routed_rate:,.0f}" if run.routed_seconds else "-",
                off_loop(run.status),
                (run.alone.bad if run.alone else 0) + (run.loaded.bad if run.loaded else 0) + run.routed_bad,
                run.error.splitlines()[0] if run.error else "; ".join(sorted(set(run.notes))),
            ]
        )
    table(
        f"Direct service while decisions run: round trips/s of 1 direct client (window {WINDOW}, {direct:,} "
        f"per round) alone and while {BACKGROUND_CLIENTS} clients send new texts to arbiter.route (window "
        f"{BACKGROUND_WINDOW} each); {rounds} round(s)",
        [
            "broker",
            "direct alone",
            "direct with",
            "with / alone",
            "routed/s meanwhile",
            "decided off loop",
            "bad",
            "note",
        ],
        rows,
    )


def off_loop(status: dict[str, Any] | None) -> str:
    """How many of the broker's decisions its deciders made (warm-ups included): that the
    deciders, and not the loop, did the work."""
    if not status:
        return "-"
    decided = decider_service(status).get("requests", 0)
    logged = ((status.get("writers") or {}).get("decisions") or {}).get("written")
    return f"{decided:,} of {logged:,}" if isinstance(logged, int) else f"{decided:,}"


def report_pauses(pauses: dict[int, Pause], rounds: int) -> None:
    def ms(values: list[float]) -> str:
        return ", ".join(f"{v * 1e3:.1f}" for v in values) or "-"

    rows = []
    for count, pause in pauses.items():
        big = {what: pause.big.get(what, []) for what in ("text", "fields")}
        rows.append(
            [
                decider_label(count),
                f"{percentile(pause.quiet, 0.5) * 1e3:.2f}" if pause.quiet else "-",
                ms(pause.quiet_max),
                f"{percentile(pause.around, 0.5) * 1e3:.2f}" if pause.around else "-",
                ms(pause.around_max),
                *(f"{ms([t for t, _ in v])} / {ms([w for _, w in v])}" for v in big.values()),
                pause.error.splitlines()[0] if pause.error else "; ".join(sorted(set(pause.notes))),
            ]
        )
    table(
        f"Worst pause of the loop: sync echo latency (ms), {PAUSE_WINDOW_S:.0f} s without and {PAUSE_WINDOW_S:.0f} s "
        f"around two arbiter.route requests of {BIG_BYTES / 1e6:.1f} MB (a new text that long; a short text and "
        f"the rest in many small fields); maxima and big requests per round, {rounds} round(s)",
        [
            "broker",
            "quiet p50",
            "quiet max",
            "around p50",
            "around max",
            "big text: round trip / worst echo",
            "big fields: round trip / worst echo",
            "note",
        ],
        rows,
    )


def report(names: list[str], results: dict[str, Measured], sync_count: int, rounds: int) -> None:
    configs = list(GRID)
    label = [f"{c}c/{w}w" for c, w in configs]
    rows = []
    for name in names:
        m = results[name]
        rows.append(
            [
                name,
                f"{max(r.wanted for r in m.rates.values()):,}" if m.rates else "-",
                *(f"{m.rates[k].rate:,.0f}" if k in m.rates else "-" for k in configs),
                sum(r.bad for r in m.rates.values()) if m.rates else "-",
                m.error.splitlines()[0] if m.error else incomplete(m),
            ]
        )
    envelope = len(route_bodies(1, False)[0])
    table(
        f"Throughput, round trips/s (pipelined, window {WINDOW} per client; c = clients, w = workers; "
        f"{rounds} interleaved round(s); bodies: {len(BODY)} bytes, D: {envelope}-byte envelopes)",
        ["system", "per cell", *label, "bad", "note"],
        rows,
    )

    rows = []
    for name in names:
        s = results[name].sync
        if s and s.latencies:
            rows.append(
                [
                    name,
                    len(s.latencies),
                    f"{percentile(s.latencies, 0.5) * 1e6:.0f}",
                    f"{percentile(s.latencies, 0.99) * 1e6:.0f}",
                    s.bad,
                ]
            )
        else:
            rows.append([name, 0, "-", "-", "-"])
    table(
        f"Sync latency, 1 client / 1 worker / 1 outstanding request ({sync_count:,} round trips unless listed, "
        f"in {rounds * SYNC_ROUND_FACTOR} interleaved round(s))",
        ["system", "round trips", "p50 us", "p99 us", "bad"],
        rows,
    )

    base = results.get(RAW)
    rows = []
    for name in names:
        m = results[name]
        cells = [ratio(m.rates.get(k), base.rates.get(k) if base else None) for k in configs]
        rows.append([name, *cells, ratio_p50(m.sync, base.sync if base else None)])
    table(
        "Ratio to raw zmq.proxy (throughput: higher is better; p50: lower is better)",
        ["system", *[f"thr {x}" for x in label], "p50 ratio"],
        rows,
    )
    report_deciders(results)
    report_metrics(results)
    report_status(names, results)


def report_metrics(results: dict[str, Measured]) -> None:
    """The same broker and workers with Prometheus metrics on (scraped meanwhile) and off."""
    configs = list(GRID)
    rows = []
    for name in METRICS_PAIRS:
        on, off = results.get(name + METRICS_ON), results.get(name)
        if on is None or off is None:
            continue
        cells = [ratio(on.rates.get(k), off.rates.get(k)) for k in configs]
        rows.append([name, *cells, ratio_p50(on.sync, off.sync), on.scrapes if on.scrapes is not None else "-"])
    if rows:
        table(
            f"Metrics on / metrics off, same broker and workers (on: /metrics scraped every {SCRAPE_EVERY_S:g} s; "
            "throughput: higher is better; p50: lower is better)",
            ["system", *[f"thr {c}c/{w}w" for c, w in configs], "p50 ratio", "scrapes"],
            rows,
        )


def report_deciders(results: dict[str, Measured]) -> None:
    """Uncached routing with decisions off the loop, against the loop in the same run."""
    loop = results.get(UNCACHED[0])
    if loop is None:
        return
    label = [f"{c}c/{w}w" for c, w in UNCACHED_GRID]
    rows = []
    for count, name in UNCACHED.items():
        if count and name in results:
            m = results[name]
            cells = [ratio(m.rates.get(k), loop.rates.get(k)) for k in UNCACHED_GRID]
            rows.append([name, *cells, ratio_p50(m.sync, loop.sync)])
    table(
        "Uncached routing: deciders / loop (throughput: higher is better; p50: lower is better)",
        ["system", *[f"thr {x}" for x in label], "p50 ratio"],
        rows,
    )


def incomplete(measured: Measured) -> str:
    """Cells whose clients ran out of time: their rates count only the replies that came back."""
    short = [f"{c}c/{w}w {r.count}/{r.wanted}" for (c, w), r in measured.rates.items() if r.count < r.wanted]
    return f"incomplete: {', '.join(short)}" if short else ""


def report_status(names: list[str], results: dict[str, Measured]) -> None:
    """What the Arbiter broker says about each run; missing fields print as '-'."""
    rows = []
    for name in names:
        status = results[name].status
        if not status:
            continue
        counters = status.get("counters") or {}
        decisions = (status.get("writers") or {}).get("decisions") or {}
        services = {k: v for k, v in (status.get("services") or {}).items() if k != "arbiter.decide"}
        rows.append(
            [
                name,
                sum(int(s.get("requests", 0)) for s in services.values() if isinstance(s, dict)),
                counters.get("decision-cache-hits", "-"),
                decider_service(status).get("requests", 0),
                decisions.get("written", "-"),
                decisions.get("dropped", "-"),
                f"{status['maxRssKb'] / 1024:.0f}" if isinstance(status.get("maxRssKb"), int) else "-",
            ]
        )
    if rows:
        table(
            "Arbiter broker's own counters after each run (arbiter.status)",
            [
                "system",
                "service requests",
                "route cache hits",
                "decided by deciders",
                "decisions logged",
                "decisions dropped",
                "max RSS MB",
            ],
            rows,
        )


def ratio(mine: Result | None, base: Result | None) -> str:
    return f"{mine.rate / base.rate:.2f}x" if mine and base and base.rate else "-"


def p50(result: Result | None) -> float | None:
    return percentile(result.latencies, 0.5) if result and result.latencies else None


def ratio_p50(mine: Result | None, base: Result | None) -> str:
    a, b = p50(mine), p50(base)
    return f"{a / b:.2f}x" if a and b else "-"


def report_targets(results: dict[str, Measured], mixed: dict[int, Mixed], pauses: dict[int, Pause]) -> None:
    """The goals the broker is held to, next to what this run measured (informative only)."""
    raw, credit, plain, routed = (results.get(n) for n in (RAW, BATCHED_50, "C arbiter, credit 1", "D route, cached"))
    rows = []
    if raw and credit and credit.rates:
        ratios = [
            credit.rates[k].rate / raw.rates[k].rate for k in credit.rates if k in raw.rates and raw.rates[k].rate
        ]
        if ratios:
            worst, best = min(ratios), max(ratios)
            label = "direct service, credit 50 batched / raw (worst, best cell)"
            rows.append([label, ">= 0.35x", f"{worst:.2f}x, {best:.2f}x", yes(worst >= 0.35)])
    for name, m in (("credit 1", plain), ("credit 50 batched", credit)):
        a, b = p50(m.sync if m else None), p50(raw.sync if raw else None)
        if a and b:
            rows.append([f"sync p50, {name} / raw", "<= 1.2x", f"{a / b:.2f}x", yes(a / b <= 1.2)])
    if routed and routed.rates:
        best = max(r.rate for r in routed.rates.values())
        rows.append(["routed, best cell", ">= 10,000/s", f"{best:,.0f}/s", yes(best >= 10_000)])
    rows += decider_target(results)
    for count, run in mixed.items():
        if run.alone and run.loaded and run.alone.rate:
            share = run.loaded.rate / run.alone.rate
            label = f"direct with decisions running / alone, {decider_label(count)}"
            rows.append([label, ">= 0.9x", f"{share:.2f}x", yes(share >= 0.9)])
    for count, pause in pauses.items():
        if pause.around:
            worst = max(pause.around)
            label = f"worst loop pause around a 0.9 MB request, {decider_label(count)}"
            rows.append([label, "< 50 ms", f"{worst * 1e3:.1f} ms", yes(worst < PAUSE_AIM_S)])
    if rows:
        table("Targets (this machine, this run)", ["measure", "target", "measured", "met"], rows)


def decider_target(results: dict[str, Measured]) -> list[list[str]]:
    """Uncached routed requests with deciders against the loop: the decider row whose worst cell
    is best, each of its cells divided by the loop row's."""
    loop = results.get(UNCACHED[0])
    if loop is None:
        return []
    best: tuple[float, str, list[float]] | None = None
    for count, name in UNCACHED.items():
        m = results.get(name)
        if not count or m is None:
            continue
        cells = [m.rates[k].rate / loop.rates[k].rate for k in UNCACHED_GRID if k in m.rates and k in loop.rates]
        if len(cells) == len(UNCACHED_GRID) and all(loop.rates[k].rate for k in UNCACHED_GRID):
            if best is None or min(cells) > best[0]:
                best = (min(cells), decider_label(count), cells)
    if best is None:
        return []
    worst, label, cells = best
    shown = ", ".join(f"{x:.2f}x" for x in cells)
    cells_label = ", ".join(f"{c}c/{w}w" for c, w in UNCACHED_GRID)
    return [
        [f"uncached routed / loop, best decider row ({cells_label})", ">= 3x", f"{label}: {shown}", yes(worst >= 3)]
    ]


def decider_label(count: int) -> str:
    return "decisions on the loop" if count == 0 else f"{count} decider{'s' if count > 1 else ''}"


def yes(flag: bool) -> str:
    return "yes" if flag else "no"


def run_all(args: argparse.Namespace) -> None:
    requests = args.requests or (4_000 if args.quick else 10_000)
    sync_count = 500 if args.quick else 2_000
    rounds = max(1, args.rounds or (1 if args.quick else 2))
    direct = requests * 2  # the mixed section's direct client, per round
    broker_ready = (ROOT / "broker.py").exists()
    chosen = [s for s in systems() if broker_ready or not s.name.startswith(("C", "D"))]
    results = {system.name: Measured() for system in chosen}
    mixed: dict[int, Mixed] = {}
    pauses: dict[int, Pause] = {}
    procs: Processes | None = None
    with tempfile.TemporaryDirectory(prefix="bench-broker-") as tmp:
        try:
            procs = Processes(Path(tmp))
            live = []
            for system in chosen:
                try:
                    live.append(Live(system, system.start(procs, Path(tmp)), results[system.name]))
                except Exception as exc:
                    results[system.name].error = f"failed: {exc}"
            measure_all(live, procs, requests, sync_count, rounds)
            procs.stop_all()  # the next sections start brokers of their own
            if broker_ready:
                mixed = start_mixed_brokers(procs, Path(tmp))
                measure_mixed(procs, mixed, direct, direct, rounds)
                pauses = measure_pauses(procs, mixed, rounds)
        finally:
            for scraper in SCRAPERS.values():
                scraper.stop.set()
            if procs is not None:
                procs.stop_all()
    names = [s.name for s in chosen]
    if not broker_ready:
        print(f"\n{ROOT / 'broker.py'} is missing: C and D were not measured.")
    report(names, results, sync_count, rounds)
    if mixed:
        report_mixed(mixed, direct, rounds)
    if pauses:
        report_pauses(pauses, rounds)
    report_targets(results, mixed, pauses)
    for name in names:
        if results[name].error:
            print(f"\n{name} {results[name].error}")
    for count, run in mixed.items():
        if run.error:
            print(f"\nmixed load, {decider_label(count)}: {run.error}")
    for count, pause in pauses.items():
        if pause.error:
            print(f"\nloop pause, {decider_label(count)}: {pause.error}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, for a smoke test")
    parser.add_argument("--requests", type=int, default=0, help="round trips per throughput cell (all rounds)")
    parser.add_argument("--rounds", type=int, default=0, help="times each cell is measured, interleaved (default 2)")
    parser.add_argument("--mode", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="raw", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", default="", help=argparse.SUPPRESS)
    parser.add_argument("--service", default="", help=argparse.SUPPRESS)
    parser.add_argument("--window", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=CONFIG_DEADLINE_S, help=argparse.SUPPRESS)
    parser.add_argument("--unique", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--until-stop", action="store_true", help=argparse.SUPPRESS)
    # bench/run.py runs us with its own argv: ignore what is not ours.
    return parser.parse_known_args(argv)[0]


def child_main(args: argparse.Namespace) -> None:
    mode, *rest = args.mode
    if mode == "proxy":
        run_proxy(LIFETIME_S)
    elif mode == "lru":
        run_lru(LIFETIME_S)
    elif mode == "pyproxy":
        run_python_proxy(LIFETIME_S)
    elif mode == "echo-worker":
        run_echo_worker(rest[0], rest[1] == "1", LIFETIME_S)
    elif mode == "mdp-worker":
        run_mdp_worker(rest[0], rest[1], int(rest[2]), rest[3] == "1", "" if rest[4] == "mdp" else rest[4], LIFETIME_S)
    elif mode == "client":
        run_client(args)
    elif mode == "pause-client":
        run_pause_client(rest[0], float(rest[1]))
    elif mode == "big-client":
        run_big_client(rest[0], int(rest[1]))
    else:
        sys.exit(f"unknown mode {mode!r}")


def main() -> None:
    args = parse_args(sys.argv[1:] if Path(sys.argv[0]).resolve() == THIS else [])
    if args.mode:
        child_main(args)
    else:
        run_all(args)


if __name__ == "__main__":
    main()
