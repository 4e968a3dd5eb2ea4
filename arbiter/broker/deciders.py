"""Decider processes: routing decisions made off the broker's loop, by workers the broker feeds
like any service.

Classifying and scoring a new text takes the better part of a millisecond. On the loop thread
every other client would wait meanwhile, and one Python thread is all the loop has; so the broker
starts decider processes (``deciders`` in configs/broker.yaml: a count, or ``auto``), at a lower
priority than itself (``decider_priority``: by default they only use cores the broker, its
clients and workers leave idle): helper processes (:mod:`arbiter.broker.helpers`) that connect
to its frontend as MDP workers of an internal service, shown as ``arbiter.decide``, and answer
with decisions. They scale across cores. Cached decisions never leave the loop.

A request is one JSON array frame: ``[fingerprint, requestId, text, files, caller, circuits,
rates, unserved]`` (the plugins' learned success rates, and those no live worker serves).
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
import sys
from pathlib import Path
from typing import Callable, Mapping, Sequence

import orjson

from arbiter.broker import helpers
from arbiter.broker.decision_cache import Decided
from arbiter.broker.helpers import HelperGroup, connectable, secret_name
from arbiter.broker.messages import RouteInput
from arbiter.broker.settings import Settings
from arbiter.broker.workers import Pending, WorkerPool
from arbiter.project.snapshot import Project, build_snapshot
from arbiter.routing.match import health_of
from arbiter.routing.pipeline import Request, Router

log = logging.getLogger("arbiter.broker")

SERVICE = "arbiter.decide"  # as status shows it; the registered name adds the secret
PRIORITIES = ("idle", "low", "normal")  # configs/broker.yaml decider_priority


def request_body(
    fingerprint: str,
    request_id: str,
    route: RouteInput,
    circuits: Mapping[str, str],
    rates: Mapping[str, float],
    unserved: Sequence[str],
) -> bytes:
    """What a decider needs besides its snapshot: the text, and the plugins' health as the broker
    sees it (circuits, learned rates, the plugins no live worker serves)."""
    fields = [route.text, list(route.files), route.caller, dict(circuits), dict(rates), list(unserved)]
    return orjson.dumps([fingerprint, request_id, *fields])


# -- the broker's side --------------------------------------------------------------------------


def for_project(count: int, settings: Settings, project: Project) -> HelperGroup:
    """The decider processes of one broker (not started yet)."""
    service = secret_name(SERVICE)
    command = [sys.executable, "-m", "arbiter.broker.deciders", connectable(settings.frontend), service]
    command += [str(project.root), *(str(p) for p in project.plugin_dirs)]
    command += [f"--heartbeat={settings.heartbeat_s}", f"--liveness={settings.liveness}"]
    command += [f"--priority={settings.decider_priority}"]
    return HelperGroup(SERVICE, count, service, command)


def ask(
    group: HelperGroup,
    pool: WorkerPool,
    pending: Pending,
    body: bytes,
    done: Callable[[Decided | None], None],
    fail: Callable[[str, str, str], None],
) -> bool:
    """Queue a decision for ``pending`` (a client's ``arbiter.route`` request); False when no
    decider is serving now (the caller decides itself). ``done`` gets the decision, or None when
    the decider's snapshot was stale; ``fail`` ends the client's request."""
    expired = "no routing decision came within the request's time"
    return group.ask(pool, pending, [body], lambda frames: done(read_answer(frames)), fail, expired)


def read_answer(frames: list[bytes]) -> Decided | None:
    """A decider's answer: the decision, or None when it was stale."""
    if len(frames) == 2:
        return Decided.from_wire(frames)
    if len(frames) == 1 and "stale" in orjson.loads(frames[0]):
        return None
    raise ValueError("a decider answered with something else than a decision")


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
        fingerprint, request_id, text, files, caller, circuits, rates, unserved = orjson.loads(body)
        if fingerprint != self.router.snapshot.fingerprint:
            old, self.router = self.router, self._build()
            old.close()
            if fingerprint != self.router.snapshot.fingerprint:
                return [orjson.dumps({"stale": self.router.snapshot.fingerprint})]
        health = health_of(circuits, rates, unserved)
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
    # credit 2: the next request waits here while one is decided, no idle trip to the broker
    helpers.serve(endpoint, service, settings, 2, lambda frames: decider.decide(frames[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
