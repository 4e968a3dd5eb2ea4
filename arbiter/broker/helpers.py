"""The broker's helper processes: work that must not run on the loop thread, done by processes the
broker starts itself and feeds like any worker service.

Deciders (routing decisions) and state keepers (shared context, locks, the event log) are both
such groups: each serves an internal service whose name carries a secret drawn when the broker
starts, so only the broker's own children can serve it (no worker may serve an ``arbiter.*``
name otherwise), and ``arbiter status`` shows it under its public name. A helper that dies is
replaced (ever more slowly when they die at once, as with a project that does not load); what it
held is handed to another like any worker's requests.
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
from typing import Callable, Mapping

from arbiter.broker.workers import Pending, WorkerPool
from arbiter.sdk.worker import Worker
from arbiter.store.recorder import die_with_parent

log = logging.getLogger("arbiter.broker")

RESPAWN_FIRST_S = 0.1
RESPAWN_MAX_S = 5.0


def secret_name(public: str) -> str:
    """A fresh name for an internal service: only the broker's own children learn it."""
    return f"{public}.{secrets.token_hex(16)}"


def connectable(endpoint: str) -> str:
    """The frontend as a local child connects to it: a wildcard bind address becomes loopback."""
    for wildcard in ("tcp://*:", "tcp://0.0.0.0:"):
        if endpoint.startswith(wildcard):
            return "tcp://127.0.0.1:" + endpoint[len(wildcard) :]
    return endpoint


@dataclass
class Child:
    process: subprocess.Popen
    started: float
    delay: float = RESPAWN_FIRST_S
    respawn_at: float = 0.0


@dataclass
class HelperGroup:
    """``count`` processes running ``command``, serving the internal service ``service`` (its real
    name, secret included) that status shows as ``public``: started, watched and replaced, stopped
    with the broker, and asked through the worker pool."""

    public: str
    count: int
    service: str
    command: list[str]
    children: list[Child] = field(default_factory=list)
    restarts: int = 0
    env: dict[str, str] = field(default_factory=dict)  # what the children get beyond ours (their keys)

    def ask(
        self,
        pool: WorkerPool,
        pending: Pending,
        body: list[bytes],
        answered: Callable[[list[bytes]], None],
        fail: Callable[[str, str, str], None],
        expired: str,
        wait: bool = False,
    ) -> bool:
        """Queue ``body`` for a helper on behalf of ``pending`` (a client's request); False when no
        helper serves now, unless ``wait``: then it waits in the queue for one (starting, or
        replacing one that died) until the request's deadline. ``answered`` gets the helper's
        reply frames; ``fail`` ends the client's request (``expired`` says what did not come in
        time, so no message names the secret)."""
        if not wait and not pool.has_workers(self.service):
            return False

        def failed(code: str, message: str, reason: str) -> None:
            fail(code, expired if code == "EXPIRED" else message, reason)

        attempt = HelperTry(answered, failed)
        pool.enqueue(
            self.service,
            Pending(pending.client, pending.service_frame, body, pending.deadline, time.monotonic(), None, attempt),
        )
        return True

    def start(self, pool: WorkerPool) -> HelperGroup:
        """Start the processes; the pool shows their service by its public name."""
        pool.internal[self.service] = self.public
        self.children = [self._spawn() for _ in range(self.count)]
        return self

    def watch(self) -> None:
        """Replace the helpers that exited (the broker calls this on its ticks)."""
        now = time.monotonic()
        for index, child in enumerate(self.children):
            if child.process.poll() is None:
                continue
            if child.respawn_at == 0.0:
                lived = now - child.started
                child.delay = RESPAWN_FIRST_S if lived > RESPAWN_MAX_S else min(RESPAWN_MAX_S, child.delay * 2)
                child.respawn_at = now + child.delay
                log.error(
                    "%s %d exited with %s; another in %.1fs", self.public, index, child.process.returncode, child.delay
                )
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

    def status(self) -> dict[str, int]:
        return {"processes": self.count, "running": len(self.pids()), "restarts": self.restarts}

    def _spawn(self, delay: float = RESPAWN_FIRST_S) -> Child:
        environment = {**os.environ, **self.env} if self.env else None
        process = subprocess.Popen(
            self.command, env=environment, preexec_fn=die_with_parent if sys.platform == "linux" else None
        )
        return Child(process, time.monotonic(), delay)


@dataclass(eq=False)
class HelperTry:
    """A request asked of a helper on behalf of one client's request (a
    :class:`~arbiter.broker.workers.Try`): the answer goes to ``done``, a failure to ``failed``."""

    done: Callable[[list[bytes]], None]
    failed: Callable[[str, str, str], None]  # (code, message, dead-letter reason)
    finished: bool = False

    @property
    def settled(self) -> bool:
        return self.finished

    def answered(self, body: list[bytes]) -> None:
        self.finished = True
        try:
            self.done(body)
        except Exception:  # the request it was for fails alone
            log.exception("a helper's answer could not be used")
            self.failed("INTERNAL_ERROR", "the broker failed on this request; it is logged", "internal-error")

    def lost(self, code: str, message: str, reason: str) -> None:
        self.finished = True
        self.failed(code, message, reason)


def serve(
    endpoint: str,
    service: str,
    options: Mapping[str, str],
    credit: int,
    handler: Callable[[list[bytes]], list[bytes]],
) -> None:
    """A helper process's life: serve the internal ``service`` with ``handler`` until SIGTERM,
    then finish what it holds, answer it and say DISCONNECT, so the broker hands on nothing twice.
    Ctrl-C reaches the broker, which stops its helpers in order."""
    worker = Worker(
        endpoint,
        service,
        credit=credit,
        heartbeat_interval=float(options.get("heartbeat", 2.5)),
        liveness=int(options.get("liveness", 3)),
        internal=True,
    )
    worker.raw(handler)
    stopping: list[int] = []  # a signal handler only records the signal (nothing that takes a lock)
    signal.signal(signal.SIGTERM, lambda number, _frame: stopping.append(number))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    thread = worker.start()
    log.debug("%s %d serving", service.split(".")[1], os.getpid())
    while not stopping and thread.is_alive():
        time.sleep(0.1)
    worker.stop()
