"""Chain runs leased to a broker, on a PostgreSQL store several brokers share.

A broker writes its name on each run it starts (the run's first row, through the recorder);
this thread renews all of them with one ``UPDATE`` every third of the lease, and takes over the
runs whose lease expired: a broker that died stops renewing, and after one lease another broker
resumes its runs the way a restarted broker resumes its own (``ChainDesk.resume_stored``: steps
done stay done, the step in flight is sent again under its idempotency key). The database work is
here, off the loop; what it finds is posted to the loop. SQLite (one broker) has no leases.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Mapping

from arbiter.store import database as state
from arbiter.store import runs

log = logging.getLogger("arbiter.broker")

Take = Callable[[list[Mapping[str, Any]]], None]


class RunLeases:
    """The lease keeper of one broker: ``owner`` its name, ``take`` hands runs taken over to the loop."""

    def __init__(self, owner: str, lease_s: float, take: Take) -> None:
        self.owner = owner
        self.lease_s = lease_s
        self.take = take
        self.taken = 0  # runs taken over from other brokers since start
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def interval_s(self) -> float:
        """Renew and look for expired leases three times a lease: a renewal may fail once or twice
        (a database hiccup) before the lease is lost."""
        return self.lease_s / 3

    def at_start(self) -> list[Mapping[str, Any]]:
        """The runs to resume at start: this broker's own (held under its name) and expired ones."""
        return [runs.get(run_id) for run_id in runs.claim(self.owner, self.lease_s, at_start=True)]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="run-leases", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval_s):
                self.tick()
        finally:
            state.close_store()  # this thread's connection

    def tick(self) -> None:
        """Renew ours, take over expired ones; a failure is logged and tried again next time."""
        try:
            runs.renew(self.owner, self.lease_s)
            taken = [runs.get(run_id) for run_id in runs.claim(self.owner, self.lease_s)]
        except Exception as exc:  # the store is momentarily unreachable: the lease outlasts a few ticks
            log.warning("run leases: %s", exc)
            return
        if taken:
            self.taken += len(taken)
            log.info("taking over %d run(s) whose lease expired: %s", len(taken), ", ".join(r["id"] for r in taken))
            self.take(taken)
