"""Starting a chain run once per request: a start sent again with the same ``messageId`` (a
client's Lazy Pirate retry, through this broker or, after a failover, through another one on the
same store) answers with the run the first one started instead of starting a second.

The broker remembers the runs it started by message id; a start it does not know is looked up in
the store (``tasks.message_id``, unique) on a reader thread of its own, never on the loop, and
what the store says is posted back to the loop. A run another broker holds under its lease is
read again every :data:`POLL_S` until it ended, or until its lease expired and this broker took it
over (:mod:`arbiter.broker.leases`), then it is waited for here.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Mapping, Union

from arbiter.orchestration.runner import ChainRun
from arbiter.store import database as state
from arbiter.store import runs

log = logging.getLogger("arbiter.broker")

POLL_S = 0.5  # how often a run held by another broker is read again
REMEMBERED = 10_000  # runs started here, by message id (running or ended)

Found = Union[ChainRun, dict[str, Any]]  # a run going on here, or a run as stored (its JSON)
Read = Callable[[], Any]


class StoreReader:
    """One thread that runs reads of the store in turn and posts each result to the loop, so a
    slow or unreachable database never holds the loop up. Started on first use."""

    def __init__(self, post: Callable[[Callable[[], None]], None]) -> None:
        self.post = post
        self._jobs: queue.Queue[tuple[Read, Callable[[Any], None]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def read(self, job: Read, then: Callable[[Any], None]) -> None:
        """Run ``job`` off the loop; ``then`` gets its result (or the exception) on the loop."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="run-starts", daemon=True)
            self._thread.start()
        self._jobs.put((job, then))

    def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)

    def _serve(self) -> None:
        try:
            while (item := self._jobs.get()) is not None:
                job, then = item
                try:
                    result: Any = job()
                except Exception as exc:  # the store is away: the loop decides what that means
                    result = exc
                self.post(lambda then=then, result=result: then(result))
        finally:
            state.close_store()  # this thread's connection


class RunStarts:
    """The runs started on this broker by message id, and the lookups of the others; the loop's."""

    def __init__(self, desk: Any, post: Callable[[Callable[[], None]], None]) -> None:
        self.desk = desk  # arbiter.broker.chains.ChainDesk
        self.reader = StoreReader(post)
        self.started: OrderedDict[str, ChainRun] = OrderedDict()
        self.looking: dict[str, list[Callable[[], None]]] = {}  # message ids being looked up, and who else asks

    def start(
        self,
        message_id: str,
        wait: bool,
        until: float,
        begin: Callable[[], ChainRun | None],
        then: Callable[[Found], None],
    ) -> None:
        """Answer ``then`` with the run ``message_id`` started, starting it (``begin``) when no run
        has this id. ``wait``: a run another broker holds is followed until it ends, or ``until``
        (monotonic) passes, when it is answered as it then stands."""
        run = self.started.get(message_id)
        if run is not None:
            then(run)
            return
        if message_id in self.looking:  # the same start, sent again while the store is read
            self.looking[message_id].append(lambda: self.start(message_id, wait, until, begin, then))
            return
        self.looking[message_id] = []
        self.reader.read(
            lambda: runs.started_by(message_id),
            lambda row: self._found(message_id, row, wait, until, begin, then),
        )

    def remember(self, message_id: str, run: ChainRun) -> None:
        self.started[message_id] = run
        self.started.move_to_end(message_id)
        while len(self.started) > REMEMBERED:
            self.started.popitem(last=False)

    def close(self) -> None:
        self.reader.close()

    def _found(
        self,
        message_id: str,
        row: Any,
        wait: bool,
        until: float,
        begin: Callable[[], ChainRun | None],
        then: Callable[[Found], None],
    ) -> None:
        if isinstance(row, Exception):  # the store cannot say: start, as a broker without it would
            log.warning("chain start %s: the store could not be read (%s); starting the run", message_id, row)
            row = None
        try:
            if row is None:
                run = begin()
                if run is not None:
                    self.remember(message_id, run)
                    then(run)
            else:
                self._follow(row, wait, until, then)
        finally:
            for again in self.looking.pop(message_id, []):
                again()

    def _follow(self, row: Mapping[str, Any], wait: bool, until: float, then: Callable[[Found], None]) -> None:
        """A stored run: answered as stored once it ended, waited for here when it runs here, and
        read again while another broker holds it (when there are leases, and the caller waits)."""
        here = self.desk.runs.get(row["id"])
        if here is not None:
            then(here)
        elif row["status"] in runs.FINISHED or not wait or self.desk.owner is None or time.monotonic() >= until:
            then(stored_json(row))
        else:
            self.desk.host.call_at(time.monotonic() + POLL_S, lambda: self._poll(row, wait, until, then))

    def _poll(self, last: Mapping[str, Any], wait: bool, until: float, then: Callable[[Found], None]) -> None:
        """Read a run another broker holds again (off the loop), and follow what it says."""
        if self.desk.detached:  # the broker is stopping: answered as it stands, as its own runs are
            then(stored_json(last))
            return
        here = self.desk.runs.get(last["id"])
        if here is not None:
            then(here)
            return

        def read_back(row: Any) -> None:
            if isinstance(row, Exception):
                log.warning("chain run %s: the store could not be read (%s)", last["id"], row)
                row = last  # read again at the next interval, or answered as last read at ``until``
            self._follow(row, wait, until, then)

        self.reader.read(lambda: runs.get(last["id"]), read_back)


def stored_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored run (:func:`arbiter.store.runs.get`) in the shape ``arbiter.chain`` answers with."""
    meta = row.get("meta") or {}
    steps = row.get("steps") or []
    return {
        "runId": row["id"],
        "chain": row["name"],
        "what": row.get("what") or "chain",
        "status": row["status"],
        "params": meta.get("params") or {},
        "result": row.get("result"),
        "results": {s["name"]: s.get("result") for s in steps if s["what"] == "step" and s["status"] == "completed"},
        "error": row.get("error"),
        "resumed": meta.get("resumed", 0),
        "steps": [_step_json(step) for step in steps],
        **{k: v for k, v in meta.items() if k in ("traceId", "requestId")},
    }


def _step_json(step: Mapping[str, Any]) -> dict[str, Any]:
    meta = step.get("meta") or {}
    return {
        "name": step["name"],
        "what": step.get("what") or "step",
        "status": step["status"],
        "plugin": step.get("plugin"),
        "command": step.get("command"),
        "tries": meta.get("tries", 0),
        "ms": meta.get("ms", 0.0),
        "result": step.get("result"),
        "error": step.get("error"),
    }
