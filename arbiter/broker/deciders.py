"""Decider processes: routing decisions made off the broker's loop, by workers the broker feeds
like any service.

Classifying and scoring a new text takes the better part of a millisecond. On the loop thread
every other client would wait meanwhile, and one Python thread is all the loop has; so the broker
starts decider processes (``deciders`` in configs/broker.yaml: a count, or ``auto``), at a lower
priority than itself (``decider_priority``: by default they only use cores the broker, its
clients and workers leave idle), which connect to its frontend as MDP workers of an
internal service and answer with decisions. They scale across cores; a decider that dies is
replaced, and what it held is handed to another like any worker's requests. Cached decisions
never leave the loop.

The service's name carries a secret drawn when the broker starts, so only the processes the
broker started can serve it (no worker may serve ``arbiter.*`` names otherwise), and ``arbiter
status`` shows it as ``arbiter.decide``.

A request is one JSON array frame: ``[fingerprint, requestId, text, files, caller, circuits]``.
The reply is the decision in two frames (:meth:`~arbiter.broker.decision_cache.Decided.wire`:
what the broker reads of it, and its encoded JSON, which the broker passes on without parsing or
encoding it again), or one frame ``{"stale": fingerprint}`` when the decider's snapshot is not
the one asked for even after reading the project again (files changed meanwhile: the broker then
decides that request itself). A decider
reads the project again as soon as a request names a fingerprint other than its own, so a hot
reload reaches the deciders with their next request.

Run one by hand with ``python -m arbiter.broker.deciders ENDPOINT SERVICE ROOT [PLUGIN_DIR...]``.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import orjson

from arbiter.broker.decision_cache import Decided
from arbiter.broker.settings import Settings
from arbiter.broker.workers import Pending, WorkerPool
from arbiter.project.snapshot import Project, build_snapshot
from arbiter.routing.match import Health
from arbiter.routing.pipeline import Request, Router
from arbiter.sdk.worker import Worker
from arbiter.store.recorder import die_with_parent

log = logging.getLogger("arbiter.broker")

SERVICE = "arbiter.decide"  # as status shows it; the registered name adds the secret
PRIORITIES = ("idle", "low", "normal")  # configs/broker.yaml decider_priority
RESPAWN_FIRST_S = 0.1
RESPAWN_MAX_S = 5.0


def service_name() -> str:
    """A fresh name for this broker's decider service: only its own children learn it."""
    return f"{SERVICE}.{secrets.token_hex(16)}"


def connectable(endpoint: str) -> str:
    """The frontend as a local child connects to it: a wildcard bind address becomes loopback."""
    for wildcard in ("tcp://*:", "tcp://0.0.0.0:"):
        if endpoint.startswith(wildcard):
            return "tcp://127.0.0.1:" + endpoint[len(wildcard) :]
    return endpoint


def request_body(
    fingerprint: str, request_id: str, text: str, files: Sequence[str], caller: str | None, circuits: Mapping[str, str]
) -> bytes:
    return orjson.dumps([fingerprint, request_id, text, list(files), caller, dict(circuits)])


# -- the broker's side --------------------------------------------------------------------------


@dataclass
class Child:
    process: subprocess.Popen
    started: float
    delay: float = RESPAWN_FIRST_S
    respawn_at: float = 0.0


@dataclass
class Deciders:
    """The decider processes of one broker: started, watched and replaced (ever more slowly when
    they die at once, as with a project that does not load), stopped with the broker, and asked
    for decisions through the worker pool."""

    count: int
    service: str  # the internal service's real name, secret included
    command: list[str]
    children: list[Child] = field(default_factory=list)
    restarts: int = 0

    @classmethod
    def for_project(cls, count: int, settings: Settings, project: Project) -> Deciders:
        service = service_name()
        command = [sys.executable, "-m", "arbiter.broker.deciders", connectable(settings.frontend), service]
        command += [str(project.root), *(str(p) for p in project.plugin_dirs)]
        command += [f"--heartbeat={settings.heartbeat_s}", f"--liveness={settings.liveness}"]
        command += [f"--priority={settings.decider_priority}"]
        return cls(count, service, command)

    def ask(
        self,
        pool: WorkerPool,
        pending: Pending,
        body: bytes,
        done: Callable[[dict[str, Any] | None], None],
        fail: Callable[[str, str, str], None],
    ) -> bool:
        """Queue a decision for ``pending`` (a client's ``arbiter.route`` request); False when no
        decider is serving now (the caller decides itself). ``fail`` ends the client's request."""
        if not pool.has_workers(self.service):
            return False

        def failed(code: str, message: str, reason: str) -> None:
            if code == "EXPIRED":  # the pool's message would name the internal service
                message = "no routing decision came within the request's time"
            fail(code, message, reason)

        attempt = DecideTry(done, failed)
        pool.enqueue(
            self.service,
            Pending(pending.client, pending.service_frame, [body], pending.deadline, time.monotonic(), None, attempt),
        )
        return True

    def start(self) -> None:
        self.children = [self._spawn() for _ in range(self.count)]

    def watch(self) -> None:
        """Replace the deciders that exited (the broker calls this on its ticks)."""
        now = time.monotonic()
        for index, child in enumerate(self.children):
            if child.process.poll() is None:
                continue
            if child.respawn_at == 0.0:
                lived = now - child.started
                child.delay = RESPAWN_FIRST_S if lived > RESPAWN_MAX_S else min(RESPAWN_MAX_S, child.delay * 2)
                child.respawn_at = now + child.delay
                log.error("decider %d exited with %s; another in %.1fs", index, child.process.returncode, child.delay)
            elif now >= child.respawn_at:
                self.restarts += 1
                self.children[index] = self._spawn(child.delay)

    def stop(self, timeout: float = 5.0) -> None:
        for child in self.children:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children:
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()

    def pids(self) -> list[int]:
        return [c.process.pid for c in self.children if c.process.poll() is None]

    def _spawn(self, delay: float = RESPAWN_FIRST_S) -> Child:
        process = subprocess.Popen(self.command, preexec_fn=die_with_parent if sys.platform == "linux" else None)
        return Child(process, time.monotonic(), delay)


@dataclass(eq=False)
class DecideTry:
    """A decision asked of a decider on behalf of one ``arbiter.route`` request (a
    :class:`~arbiter.broker.workers.Try`): the outcome goes to ``done`` or ``failed``."""

    done: Callable[[Decided | None], None]  # the decision; None when the decider was stale
    failed: Callable[[str, str, str], None]  # (code, message, dead-letter reason)
    finished: bool = False

    @property
    def settled(self) -> bool:
        return self.finished

    def answered(self, body: list[bytes]) -> None:
        self.finished = True
        try:
            if len(body) == 2:
                self.done(Decided.from_wire(body))
            elif len(body) == 1 and "stale" in orjson.loads(body[0]):
                self.done(None)
            else:
                raise ValueError("a decider answered with something else than a decision")
        except Exception:  # the request it was for fails alone
            log.exception("a decision could not be used")
            self.failed("INTERNAL_ERROR", "the broker failed on this request; it is logged", "internal-error")

    def lost(self, code: str, message: str, reason: str) -> None:
        self.finished = True
        self.failed(code, message, reason)


# -- the decider process --------------------------------------------------------------------------


class Decider:
    """One decider's state: the router of the snapshot it decides with."""

    def __init__(self, project: Project):
        self.project = project
        self.router = self._build()

    def _build(self) -> Router:
        snapshot = build_snapshot(self.project.root, self.project.plugin_dirs or None)
        return Router(snapshot)

    def decide(self, body: bytes) -> list[bytes]:
        fingerprint, request_id, text, files, caller, circuits = orjson.loads(body)
        if fingerprint != self.router.snapshot.fingerprint:
            old, self.router = self.router, self._build()
            old.close()
            if fingerprint != self.router.snapshot.fingerprint:
                return [orjson.dumps({"stale": self.router.snapshot.fingerprint})]
        health = {name: Health(circuit=state) for name, state in circuits.items()}
        result = self.router.route(Request(text, tuple(files), caller, request_id), health)
        return Decided.of(result.to_json(trace=False)).wire()


def lower_priority(priority: str) -> None:
    """``idle``: run only when a core has nothing else to do (Linux SCHED_IDLE; elsewhere the
    lowest nice level), so forwarding never waits for a decision; ``low``: nice 10; ``normal``:
    as the broker. Under a host saturated with other work, ``idle`` deciders wait for it."""
    if priority == "idle" and hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    elif priority in ("idle", "low"):
        os.nice(19 if priority == "idle" else 10)


def main(argv: list[str]) -> int:
    options = [a for a in argv if a.startswith("--")]
    args = [a for a in argv if not a.startswith("--")]
    if len(args) < 3:
        print(__doc__.split("Run one by hand with ")[-1].strip(), file=sys.stderr)
        return 2
    endpoint, service, root, *plugin_dirs = args
    settings = dict(option[2:].split("=", 1) for option in options)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s decider %(levelname)s %(message)s")
    decider = Decider(Project(Path(root), tuple(Path(p) for p in plugin_dirs)))
    lower_priority(settings.get("priority", "idle"))
    worker = Worker(
        endpoint,
        service,
        credit=2,  # the next request waits here while one is decided: no idle trip to the broker
        heartbeat_interval=float(settings.get("heartbeat", 2.5)),
        liveness=int(settings.get("liveness", 3)),
        internal=True,
    )
    worker.raw(lambda frames: decider.decide(frames[0]))
    stopping: list[int] = []  # a signal handler only records the signal (nothing that takes a lock)
    signal.signal(signal.SIGTERM, lambda number, _frame: stopping.append(number))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the broker, which stops us in order
    thread = worker.start()
    log.debug("decider %d serving", os.getpid())
    while not stopping and thread.is_alive():
        time.sleep(0.1)
    worker.stop()  # what it holds is answered, then DISCONNECT: the broker hands on nothing twice
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
