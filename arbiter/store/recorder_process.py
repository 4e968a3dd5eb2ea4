"""The recorder process: it writes what the broker records — decision rows, circuit states, dead
letters, chain runs — into the state store with their events in the event log
(:mod:`.event_rows`), a batch per transaction, and confirms each batch by its sequence
number; between batches it applies the decision log's retention. The broker's side is
:class:`arbiter.store.recorder.Recorder`; what travels between the two is here.

Run by the broker as ``python -m arbiter.store.recorder_process ENDPOINT DATABASE_URL ROOT
[RETENTION_JSON]``; it ends with the broker (PR_SET_PDEATHSIG) or when told CLOSE.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import orjson
import zmq

from arbiter.store import agents, event_rows, runs
from arbiter.store import database as state
from arbiter.store import dead_letters as letters
from arbiter.store import decisions as record
from arbiter.store import retention as keeping

log = logging.getLogger("arbiter.store.recorder")

ROWS = "rows"  # decision rows (record.LogEntry)
CIRCUITS = "circuits"  # (plugin, version, circuit, reason)
LETTERS = "letters"  # dead letters (letters.Submitted)
TASKS = "tasks"  # chain runs and their steps as they change (runs.task_values)
BATCH = "batch"
CLOSE = "close"
PARENT_CHECK_S = 1.0  # how often an idle recorder looks whether the broker is still there

Run = tuple[str, list[Any]]  # one kind's items, in submission order


@dataclass(frozen=True, slots=True)
class Message:
    """One message to the recorder, encoded once: a batch that has to be sent again after a
    restart, or waits for a full pipe to drain, is not pickled again."""

    seq: int
    rows: int  # decision rows in it, released from ``queued`` when it is confirmed
    letters: tuple[Any, ...]  # its dead letters: kept, to be spilled should the database refuse them
    data: bytes  # pickled (BATCH, seq, runs, key) or (CLOSE, seq, None, None)

    @classmethod
    def batch(cls, seq: int, runs: list[Run], key: str) -> Message:
        """``key`` names the batch for good (the broker's recorder and the sequence number), so a
        batch sent again after a restart is known in the event log."""
        rows, letter_items = 0, []
        for kind, items in runs:
            if kind == ROWS:
                rows += len(items)
            elif kind == LETTERS:
                letter_items += items
        data = pickle.dumps((BATCH, seq, runs, key), protocol=pickle.HIGHEST_PROTOCOL)
        return cls(seq, rows, tuple(letter_items), data)

    @classmethod
    def close(cls, seq: int) -> Message:
        return cls(seq, 0, (), pickle.dumps((CLOSE, seq, None, None), protocol=pickle.HIGHEST_PROTOCOL))


def _write_rows(entries: list[record.LogEntry]) -> None:
    record.store_values([record.entry_values(entry) for entry in entries], skip_existing=True)


def _write_circuits(circuits: list[tuple[str, str, str, str]]) -> None:
    for circuit in circuits:
        record.save_circuit(*circuit)


def _write_letters(items: list[letters.Submitted]) -> None:
    for item in items:
        letters.store(letters.submitted(item))


WRITERS: dict[str, Callable[[list[Any]], None]] = {
    ROWS: _write_rows,
    CIRCUITS: _write_circuits,
    LETTERS: _write_letters,
    TASKS: runs.save,
}


EVENTS: dict[str, Callable[[Any], dict[str, Any]]] = {
    ROWS: event_rows.decision_event,
    CIRCUITS: event_rows.circuit_event,
    LETTERS: event_rows.letter_event,
    TASKS: event_rows.task_event,
}


def write(runs: list[Run], key: str) -> dict[str, float]:
    """Apply one batch to the database, in order, in one transaction (tried again while the
    database is busy), its events in the event log last. A re-sent batch the dead recorder had
    written changes nothing. Returns the plugins' success rates the batch changed."""
    return state.with_retries(_write_batch, runs, key)


def _write_batch(runs: list[Run], key: str) -> dict[str, float]:
    """The batch's rows, what the registry learns from them, their events (last: see
    :func:`event_rows.log_batch`); returns the success rates of the plugins it taught about."""
    with state.writing():
        for kind, items in runs:
            WRITERS[kind](items)
        logged = [EVENTS[kind](item) for kind, items in runs for item in items]
        if event_rows.logged(logged, key):
            return {}
        rates = agents.learn(_outcomes(runs))
        event_rows.log_batch(logged, key)
        return rates


def _outcomes(runs: list[Run]) -> list[agents.Outcome]:
    """What each plugin did: a routed request's tries (its decision row), a chain's or a plan's
    steps that ended (their task rows)."""
    found: list[agents.Outcome] = []
    for kind, items in runs:
        if kind == ROWS:
            found += [o for entry in items for o in agents.outcomes_of(entry[3])]
        elif kind == TASKS:
            found += [o for row in items if (o := agents.step_outcome(row)) is not None]
    return found


def serve(endpoint: str, database_url: str, root: Path, retention: keeping.Retention | None = None) -> int:
    """Write what the broker sends until it says CLOSE or goes away; keep the retention between.
    A store that cannot be opened at start ends the process (the broker holds the batches and
    starts another later); one that fails later costs the batches it refuses, counted."""
    store = state.Reopening(database_url, root)
    try:
        store.ready()
    except state.StoreError as exc:
        log.error("recorder: %s", exc)
        return 1
    sock = zmq.Context.instance().socket(zmq.PAIR)
    sock.setsockopt(zmq.LINGER, 5000)  # the last confirmation must reach the broker
    sock.connect(endpoint)
    parent = os.getppid()
    upkeep = keeping.Upkeep(retention)
    try:
        while True:
            if sock.poll(int(min(PARENT_CHECK_S, upkeep.wait_s()) * 1000)):
                kind, seq, runs, key = pickle.loads(sock.recv())
                if kind == CLOSE:
                    sock.send(orjson.dumps((seq, None, None, {})))
                    return 0
                sock.send(orjson.dumps((seq, *_apply(store, runs, key))))
            elif os.getppid() != parent:
                return 0  # the broker is gone; nobody is left to confirm to
            upkeep.run_if_due()
    finally:
        sock.close()
        store.close()
        if os.getppid() != parent:  # killed with the broker: nobody else will remove its socket
            shutil.rmtree(Path(endpoint.removeprefix("ipc://")).parent, ignore_errors=True)


def _apply(store: state.Reopening, runs: list[Run], key: str) -> tuple[str | None, str | None, dict[str, float]]:
    """Write a batch: (the batch's error, its letters' error), for the broker's status, and the
    plugins' success rates it changed, for the broker's routing. When a
    batch with dead letters fails, the rest is tried without them, so a letter the database
    refuses costs no decision row (the broker keeps such letters for later). The store is opened
    again first when its file changed or the last batch failed."""
    error, rates = _try(store, runs, key)
    if error is None or not any(kind == LETTERS for kind, _ in runs):
        return error, None, rates
    others = [run for run in runs if run[0] != LETTERS]
    if not others:
        return None, error, {}
    again, rates = _try(store, others, key)
    return (None, error, rates) if again is None else (error, error, {})


def _try(store: state.Reopening, runs: list[Run], key: str) -> tuple[str | None, dict[str, float]]:
    try:
        store.ready()
        rates = write(runs, key)
    except Exception as exc:  # the broker keeps serving; the error shows in its status
        store.wrote(False)
        kinds = " and ".join(dict.fromkeys(kind for kind, _ in runs))
        failure = state.store_failure(exc)
        return f"{kinds} not written: {failure or f'{type(exc).__name__}: {exc}'}", {}
    store.wrote(True)
    return None, rates


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print(
            "usage: python -m arbiter.store.recorder_process ENDPOINT DATABASE_URL ROOT [RETENTION_JSON]",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the broker died (PR_SET_PDEATHSIG)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the broker, which closes us in order
    retention = keeping.Retention.from_json(orjson.loads(argv[3])) if len(argv) == 4 else None
    return serve(argv[0], argv[1], Path(argv[2]), retention)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
