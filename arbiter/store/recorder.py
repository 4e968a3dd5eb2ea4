"""The broker's writes to the database, done by a process of its own: the decision log, circuit
states and dead letters.

Writing rows to the database is Python work (binding thousands of parameters per second) and
in a thread it holds the interpreter lock that the broker's loop needs between any two socket
calls, which made routed requests markedly slower (docs/PERFORMANCE.md). So
the broker hands what it records, in batches, to a child process over a ZeroMQ PAIR socket on a
private ``ipc://`` path, and that process writes it on its own interpreter.

Nothing is lost or doubled on the way. A batch holds decision rows, circuit states and dead
letters in the order they were submitted, and is written in one transaction. Every batch carries
a sequence number and stays in the broker's memory until the recorder confirms it; when the
recorder dies, the broker starts another and sends the unconfirmed batches again. What the dead
recorder had already written is not written twice: a decision row's id is its primary key
(``INSERT ... ON CONFLICT DO NOTHING``), and a dead letter's id, chosen here on the broker, is
skipped when the store already has it (:mod:`.dead_letters`), also when the letter was counted
on an earlier one. What waits is bounded (``max_queue`` rows, ``max_letters`` letters): beyond
it new ones are counted as dropped, never blocking the broker, and so is a batch the database
refuses.

Between batches the recorder applies the decision log's retention (:mod:`.retention`), a
bounded amount per round, so the broker's loop never does.

The parent side, :class:`Recorder`, is driven by one thread (the broker's loop: ``submit_*``
per request, :meth:`Recorder.flush` every ``interval_s``, the ``state.batch_ms`` setting) and
needs no lock; ``arbiter route --input`` drives it the same way. Run the child with
``python -m arbiter.store.recorder ENDPOINT DATABASE_URL ROOT [RETENTION_JSON]``.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import orjson
import zmq

from arbiter.store import database as state
from arbiter.store import dead_letters as letters
from arbiter.store import decisions as record
from arbiter.store import retention as keeping

log = logging.getLogger("arbiter.store.recorder")

ROWS = "rows"  # decision rows (record.LogEntry)
CIRCUITS = "circuits"  # (plugin, version, circuit, reason)
LETTERS = "letters"  # dead letters (letters.Submitted)
BATCH = "batch"
CLOSE = "close"
PARENT_CHECK_S = 1.0  # how often an idle recorder looks whether the broker is still there
DIR_PREFIX = "arbiter-recorder-"
RESPAWN_FIRST_S = 0.05  # a recorder that served a while is replaced at once (well, next flush)
RESPAWN_MAX_S = 5.0
ERRORS_KEPT = 20

Run = tuple[str, list[Any]]  # one kind's items, in submission order


@dataclass(frozen=True, slots=True)
class Message:
    """One message to the recorder, encoded once: a batch that has to be sent again after a
    restart, or waits for a full pipe to drain, is not pickled again."""

    seq: int
    rows: int  # decision rows in it, released from ``queued`` when it is confirmed
    letters: int  # dead letters in it, likewise
    data: bytes  # pickled (BATCH, seq, runs) or (CLOSE, seq, None)

    @classmethod
    def batch(cls, seq: int, runs: list[Run]) -> Message:
        counts = {ROWS: 0, LETTERS: 0, CIRCUITS: 0}
        for kind, items in runs:
            counts[kind] += len(items)
        data = pickle.dumps((BATCH, seq, runs), protocol=pickle.HIGHEST_PROTOCOL)
        return cls(seq, counts[ROWS], counts[LETTERS], data)

    @classmethod
    def close(cls, seq: int) -> Message:
        return cls(seq, 0, 0, pickle.dumps((CLOSE, seq, None), protocol=pickle.HIGHEST_PROTOCOL))


class Tally:
    """What one kind of record came to: ``written``, ``dropped`` and the last ``errors``, as
    ``arbiter status`` shows each writer."""

    def __init__(self) -> None:
        self.written = 0
        self.dropped = 0
        self.errors: list[str] = []

    def error(self, text: str) -> None:
        log.error("recorder: %s", text)
        self.errors.append(text)
        del self.errors[:-ERRORS_KEPT]


class DeadLetters(Tally):
    """The dead-letter writer of a :class:`Recorder` (the broker's ``dead_letters``): letters go
    in the recorder's batches, in order with the decision rows; the counts are the letters'."""

    def __init__(self, recorder: Recorder, max_queue: int) -> None:
        super().__init__()
        self._recorder = recorder
        self._max_queue = max_queue
        self.queued = 0  # letters held until the recorder confirms them

    def submit(
        self,
        service: str,
        body: Sequence[bytes] | bytes,
        reason: str,
        detail: str | None = None,
        message_id: str | None = None,
        client: str | None = None,
    ) -> None:
        """Queue a letter; never blocks. Its id is drawn now, so a re-sent batch carries it again;
        the envelope is read (for a missing message id) in the recorder, not here."""
        if not service or not reason:
            self.dropped += 1
            self.error(f"a dead letter without {'a service' if not service else 'a reason'} was not kept")
            return
        if self.queued >= self._max_queue:
            self.dropped += 1
            return
        self.queued += 1
        item = (state.new_id(), service, letters.as_frames(body), reason, detail, message_id, client, time.time())
        self._recorder._add(LETTERS, item)

    def close(self, timeout: float = 10.0) -> None:
        """Close the recorder (the dead letters are written by it)."""
        self._recorder.close(timeout)


class Recorder(Tally):
    """Broker side: queue rows, circuit states and letters, send them in batches, keep them until
    the recorder confirms. Its counts are the decision rows' (``writers.decisions`` in ``arbiter
    status``, with ``queued``, ``restarts`` and the process id); :attr:`dead_letters` counts the
    letters (``writers.deadLetters``)."""

    def __init__(
        self,
        database_url: str,
        root: Path,
        *,
        interval_s: float = 0.05,
        max_batch: int = 1000,
        max_queue: int = 50_000,
        max_letters: int = 10_000,
        retention: keeping.Retention | None = None,
        context: zmq.Context | None = None,
    ):
        super().__init__()
        self.interval_s = interval_s  # how often the owner should call flush (the broker's timer)
        self._max_batch = max_batch
        self._max_queue = max_queue
        sweep_stale_sockets()
        self._dir = tempfile.mkdtemp(prefix=DIR_PREFIX)  # mode 0700: only we can connect
        self.endpoint = f"ipc://{self._dir}/log"
        self._command = [sys.executable, "-m", "arbiter.store.recorder", self.endpoint, database_url]
        self._command.append(str(Path(root).resolve()))
        if retention is not None:
            self._command.append(orjson.dumps(retention.to_json()).decode())
        self._sock = (context or zmq.Context.instance()).socket(zmq.PAIR)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(self.endpoint)
        self._runs: list[Run] = []  # not yet in a batch
        self._open: list[Any] | None = None  # the items of the last run, while it takes decision rows
        self._pending = 0  # items in _runs
        self._unsent: deque[Message] = deque()  # batches waiting for the socket
        self._unconfirmed: dict[int, Message] = {}  # sent, not yet confirmed written
        self._held = 0  # decision rows in the three above
        self._seq = itertools.count(1)
        self._next_flush = 0.0
        self.restarts = 0
        self.dead_letters = DeadLetters(self, max_letters)
        self._respawn_delay = RESPAWN_FIRST_S
        self._process = self._spawn()

    # -- what the broker calls --------------------------------------------------------------

    def submit_entry(self, entry: record.LogEntry) -> None:
        """Queue one request's row (:meth:`record.RowTemplate.entry`); never blocks."""
        if self._held >= self._max_queue:
            self.dropped += 1
            return
        rows = self._open
        if rows is None:
            rows = self._open = []
            self._runs.append((ROWS, rows))
        rows.append(entry)
        self._held += 1
        self._pending += 1
        if self._pending >= self._max_batch:
            self._batch()

    def submit_decision(self, decision: Mapping[str, Any], origin: str) -> None:
        """Queue the row of a decision in the explain JSON shape, for callers without a decision
        cache to reuse rows from (``arbiter route --input``)."""
        template = record.RowTemplate.of(decision, origin)
        self.submit_entry(template.entry(template.request_id, decision.get("outcome"), decision.get("success")))

    def submit_circuit(self, plugin: str, version: str, circuit: str, reason: str) -> None:
        """Keep a circuit state (:func:`record.save_circuit`), in order with the rows before it."""
        self._add(CIRCUITS, (plugin, version, circuit, reason))

    def flush(self) -> None:
        """Send what gathered since the last call and read the recorder's confirmations; start a
        new recorder when the last one died. The broker calls this every ``interval_s``."""
        self._next_flush = time.monotonic() + self.interval_s
        self._watch()
        self._batch()
        self._send_waiting()
        self._read_confirmations()

    def flush_if_due(self) -> None:
        """:meth:`flush` when ``interval_s`` has passed since the last one: for an owner without
        a timer, which calls this after each submit."""
        if time.monotonic() >= self._next_flush:
            self.flush()

    def close(self, timeout: float = 10.0) -> None:
        """Write everything still held, then stop the recorder (killed if it takes too long).
        Closing again does nothing."""
        if self._sock.closed:
            return
        self.flush()
        closing = next(self._seq)
        self._unsent.append(Message.close(closing))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._read_confirmations()
            if closing not in self._unconfirmed and not self._unsent:
                break  # the recorder confirmed CLOSE, so everything before it too
            self._watch()
            self._send_waiting()
            self._sock.poll(50)
        try:
            self._process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._held or self.dead_letters.queued:
            log.error(
                "recorder: %d decision row(s) and %d dead letter(s) could not be written before it stopped",
                self._held,
                self.dead_letters.queued,
            )
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    @property
    def queued(self) -> int:
        """Decision rows held until the recorder confirms them."""
        return self._held

    @property
    def process(self) -> subprocess.Popen:
        """The recorder process now serving (a new one after each restart)."""
        return self._process

    @property
    def closed(self) -> bool:
        return self._sock.closed

    # -- the stream -------------------------------------------------------------------------

    def _add(self, kind: str, item: Any) -> None:
        """Append a circuit state or a letter to the batch being gathered, in submission order
        (decision rows take :meth:`submit_entry`'s shorter way)."""
        if self._runs and self._runs[-1][0] == kind:
            self._runs[-1][1].append(item)
        else:
            self._runs.append((kind, [item]))
        self._open = None  # the next decision row starts a run of its own, after this item
        self._pending += 1
        if self._pending >= self._max_batch:
            self._batch()

    def _batch(self) -> None:
        if self._runs:
            runs, self._runs, self._open, self._pending = self._runs, [], None, 0
            self._unsent.append(Message.batch(next(self._seq), runs))
            self._send_waiting()

    def _send_waiting(self) -> None:
        """Send in order until the socket pushes back (no recorder connected yet, or a full pipe)."""
        while self._unsent:
            message = self._unsent[0]
            try:
                self._sock.send(message.data, zmq.NOBLOCK)
            except zmq.Again:
                return
            self._unsent.popleft()
            self._unconfirmed[message.seq] = message

    def _read_confirmations(self) -> None:
        while True:
            try:
                seq, error = orjson.loads(self._sock.recv(zmq.NOBLOCK))
            except zmq.Again:
                return
            message = self._unconfirmed.pop(seq, None)
            if message is not None:  # else a confirmation from before a restart, of a batch re-sent
                self._confirmed(message, error)

    def _confirmed(self, message: Message, error: str | None) -> None:
        """Release what a batch held and count it: written, or, when the database refused it even
        after retries, dropped with the error (not kept: it would be refused again)."""
        self._held -= message.rows
        self.dead_letters.queued -= message.letters
        for tally, count in ((self, message.rows), (self.dead_letters, message.letters)):
            if error is None:
                tally.written += count
            elif count:
                tally.dropped += count
                tally.error(error)
        if error is not None and not (message.rows or message.letters):
            self.error(error)  # a batch of circuit states alone

    def _watch(self) -> None:
        """A recorder that exited on its own is replaced, and what it had not confirmed goes again.
        One that dies soon after starting (say, it cannot open the database) is restarted ever
        more slowly, up to ``RESPAWN_MAX_S`` apart, rather than in a tight loop."""
        if self._process.poll() is None or time.monotonic() < self._respawn_at:
            return
        if self._respawn_at == 0.0:  # first look at this death
            lived = time.monotonic() - self._spawned_at
            self._respawn_delay = (
                RESPAWN_FIRST_S if lived > RESPAWN_MAX_S else min(RESPAWN_MAX_S, self._respawn_delay * 2)
            )
            self._respawn_at = time.monotonic() + self._respawn_delay
            self.error(
                f"the recorder process exited with code {self._process.returncode}; "
                f"starting another in {self._respawn_delay:.1f}s"
            )
            return
        self.restarts += 1
        self._read_confirmations()  # what it confirmed before dying need not be sent again
        self._unsent.extendleft(sorted(self._unconfirmed.values(), key=lambda m: m.seq, reverse=True))
        self._unconfirmed.clear()
        self._process = self._spawn()

    def _spawn(self) -> subprocess.Popen:
        self._spawned_at, self._respawn_at = time.monotonic(), 0.0
        return subprocess.Popen(self._command, preexec_fn=_die_with_parent if sys.platform == "linux" else None)


def sweep_stale_sockets(folder: str | None = None) -> None:
    """Remove the socket folders of recorders whose broker was killed with them: nothing listens
    on such a socket any more (a folder still without a socket may be another broker's, just made)."""
    for path in Path(folder or tempfile.gettempdir()).glob(DIR_PREFIX + "*"):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path / "log"))
        except ConnectionRefusedError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass
        finally:
            probe.close()


def _die_with_parent() -> None:
    """In the child before exec: end with the broker even when it is killed outright. Linux sends
    the signal when the *thread* that started the child ends: the broker starts and restarts its
    recorder from its main thread, the one that lives as long as the broker."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# -- the recorder process ---------------------------------------------------------------------


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
}


def write(runs: list[Run]) -> None:
    """Apply one batch to the database, in order, in one transaction (tried again while the
    database is busy). A re-sent batch the dead recorder had written changes nothing."""
    state.with_retries(_write_batch, runs)


def _write_batch(runs: list[Run]) -> None:
    with state.writing():
        for kind, items in runs:
            WRITERS[kind](items)


def serve(endpoint: str, database_url: str, root: Path, retention: keeping.Retention | None = None) -> int:
    """Write what the broker sends until it says CLOSE or goes away; keep the retention between."""
    state.open_store(database_url, root)
    sock = zmq.Context.instance().socket(zmq.PAIR)
    sock.setsockopt(zmq.LINGER, 5000)  # the last confirmation must reach the broker
    sock.connect(endpoint)
    parent = os.getppid()
    upkeep = keeping.Upkeep(retention)
    try:
        while True:
            if sock.poll(int(min(PARENT_CHECK_S, upkeep.wait_s()) * 1000)):
                kind, seq, runs = pickle.loads(sock.recv())
                if kind == CLOSE:
                    sock.send(orjson.dumps((seq, None)))
                    return 0
                sock.send(orjson.dumps((seq, _apply(runs))))
            elif os.getppid() != parent:
                return 0  # the broker is gone; nobody is left to confirm to
            upkeep.run_if_due()
    finally:
        sock.close()
        state.close_store()
        if os.getppid() != parent:  # killed with the broker: nobody else will remove its socket
            shutil.rmtree(Path(endpoint.removeprefix("ipc://")).parent, ignore_errors=True)


def _apply(runs: list[Run]) -> str | None:
    """Write a batch; the error, for the broker's status, when the database refused it."""
    try:
        write(runs)
    except Exception as exc:  # the broker keeps serving; the error shows in its status
        kinds = " and ".join(dict.fromkeys(kind for kind, _ in runs))
        return f"{kinds} not written: {type(exc).__name__}: {exc}"
    return None


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print("usage: python -m arbiter.store.recorder ENDPOINT DATABASE_URL ROOT [RETENTION_JSON]", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the broker died (PR_SET_PDEATHSIG)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the broker, which closes us in order
    retention = keeping.Retention.from_json(orjson.loads(argv[3])) if len(argv) == 4 else None
    return serve(argv[0], argv[1], Path(argv[2]), retention)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
