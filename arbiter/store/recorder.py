"""The broker's decision log, written by a process of its own.

Writing rows to the database is Python work (binding thousands of parameters per second) and
in a thread it holds the interpreter lock that the broker's loop needs between any two socket
calls: measured on a 2-core machine, routed requests ran 25% faster with no writer at all. So
the broker hands rows, in batches, to a child process over a ZeroMQ PAIR socket on a private
``ipc://`` path, and that process does the inserts on its own interpreter.

Nothing is lost on the way. Every batch carries a sequence number and stays in the broker's
memory until the recorder confirms it was written; when the recorder dies, the broker starts
another and sends the unconfirmed batches again, and the rows' primary keys make a second
insert of the same row a no-op (``INSERT ... ON CONFLICT DO NOTHING``). What waits is bounded
(``max_queue`` rows): beyond it new rows are counted as dropped, never blocking the broker.

The parent side, :class:`Recorder`, is driven by the broker's loop thread (``submit_*`` per
request, :meth:`Recorder.flush` every ``interval_s``, the ``state.batch_ms`` setting) and needs
no lock. Run the child with ``python -m arbiter.store.recorder ENDPOINT DATABASE_URL ROOT``.
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
from typing import Any

import orjson
import zmq

from arbiter.store import database as state
from arbiter.store import decisions as record

log = logging.getLogger("arbiter.store.recorder")

ROWS = "rows"
CIRCUIT = "circuit"
CLOSE = "close"
PARENT_CHECK_S = 1.0  # how often an idle recorder looks whether the broker is still there
DIR_PREFIX = "arbiter-recorder-"
RESPAWN_FIRST_S = 0.05  # a recorder that served a while is replaced at once (well, next flush)
RESPAWN_MAX_S = 5.0


@dataclass(frozen=True, slots=True)
class Message:
    """One message to the recorder, encoded once: a batch that has to be sent again after a
    restart, or waits for a full pipe to drain, is not pickled again."""

    seq: int
    rows: int  # decision rows in it, released from ``queued`` when it is confirmed
    data: bytes  # pickled (kind, seq, payload)

    @classmethod
    def of(cls, kind: str, seq: int, payload: Any) -> Message:
        rows = len(payload) if kind == ROWS else 0
        return cls(seq, rows, pickle.dumps((kind, seq, payload), protocol=pickle.HIGHEST_PROTOCOL))


class Recorder:
    """Broker side: queue rows, send them in batches, keep them until the recorder confirms.

    ``written``, ``dropped``, ``queued``, ``restarts`` and ``errors`` are what ``arbiter status``
    shows of it (``writers.decisions``)."""

    def __init__(
        self,
        database_url: str,
        root: Path,
        *,
        interval_s: float = 0.05,
        max_batch: int = 1000,
        max_queue: int = 50_000,
        context: zmq.Context | None = None,
    ):
        self.interval_s = interval_s  # how often the owner should call flush (the broker's timer)
        self._command = [sys.executable, "-m", "arbiter.store.recorder", "", database_url, str(Path(root).resolve())]
        self._max_batch = max_batch
        self._max_queue = max_queue
        sweep_stale_sockets()
        self._dir = tempfile.mkdtemp(prefix=DIR_PREFIX)  # mode 0700: only we can connect
        self.endpoint = f"ipc://{self._dir}/log"
        self._command[3] = self.endpoint
        self._sock = (context or zmq.Context.instance()).socket(zmq.PAIR)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(self.endpoint)
        self._rows: list[record.LogEntry] = []  # not yet in a batch
        self._unsent: deque[Message] = deque()  # batches waiting for the socket
        self._unconfirmed: dict[int, Message] = {}  # sent, not yet confirmed written
        self._held = 0  # rows in the three above
        self._seq = itertools.count(1)
        self.written = 0
        self.dropped = 0
        self.restarts = 0
        self.errors: list[str] = []
        self._respawn_delay = RESPAWN_FIRST_S
        self._process = self._spawn()

    # -- what the broker calls --------------------------------------------------------------

    def submit_entry(self, entry: record.LogEntry) -> None:
        """Queue one request's row (:meth:`record.RowTemplate.entry`); never blocks."""
        if self._held >= self._max_queue:
            self.dropped += 1
            return
        self._rows.append(entry)
        self._held += 1
        if len(self._rows) >= self._max_batch:
            self._batch_rows()

    def submit_circuit(self, plugin: str, version: str, circuit: str, reason: str) -> None:
        """Keep a circuit state (:func:`record.save_circuit`), in order with the rows before it."""
        self._batch_rows()
        self._queue(CIRCUIT, (plugin, version, circuit, reason))

    def flush(self) -> None:
        """Send what gathered since the last call and read the recorder's confirmations; start a
        new recorder when the last one died. The broker calls this every tick."""
        self._watch()
        self._batch_rows()
        self._send_waiting()
        self._read_confirmations()

    def close(self, timeout: float = 10.0) -> None:
        """Write everything still held, then stop the recorder (killed if it takes too long)."""
        self.flush()
        closing = next(self._seq)
        self._unsent.append(Message.of(CLOSE, closing, None))
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
        if self._held:
            log.error("recorder: %d decision row(s) could not be written before the broker stopped", self._held)
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    @property
    def queued(self) -> int:
        """Rows held until the recorder confirms them."""
        return self._held

    @property
    def process(self) -> subprocess.Popen:
        """The recorder process now serving (a new one after each restart)."""
        return self._process

    @property
    def closed(self) -> bool:
        return self._sock.closed

    # -- the stream -------------------------------------------------------------------------

    def _batch_rows(self) -> None:
        if self._rows:
            rows, self._rows = self._rows, []
            self._queue(ROWS, rows)

    def _queue(self, kind: str, payload: Any) -> None:
        self._unsent.append(Message.of(kind, next(self._seq), payload))
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
                seq, written, error = orjson.loads(self._sock.recv(zmq.NOBLOCK))
            except zmq.Again:
                return
            message = self._unconfirmed.pop(seq, None)
            if message is None:
                continue  # a confirmation from before a restart, of a batch already re-sent
            self.written += written
            self._held -= message.rows
            if error:  # the database refused the batch even after retries: counted, not kept
                self.dropped += message.rows
                self._error(error)

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
            self._error(
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

    def _error(self, text: str) -> None:
        log.error("recorder: %s", text)
        self.errors.append(text)
        del self.errors[:-20]


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


def write(kind: str, payload: Any) -> int:
    """Apply one message to the database; returns how many of its rows are now stored (a row
    re-sent after a restart that the dead recorder had already written counts: it is stored)."""
    if kind == ROWS:
        state.with_retries(record.insert_values, [record.entry_values(entry) for entry in payload], True)
        return len(payload)
    if kind == CIRCUIT:
        state.with_retries(record.save_circuit, *payload)
    return 0


def serve(endpoint: str, database_url: str, root: Path) -> int:
    """Write what the broker sends until it says CLOSE or goes away."""
    state.open_store(database_url, root)
    sock = zmq.Context.instance().socket(zmq.PAIR)
    sock.setsockopt(zmq.LINGER, 5000)  # the last confirmation must reach the broker
    sock.connect(endpoint)
    parent = os.getppid()
    try:
        while True:
            if not sock.poll(int(PARENT_CHECK_S * 1000)):
                if os.getppid() != parent:
                    return 0  # the broker is gone; nobody is left to confirm to
                continue
            kind, seq, payload = pickle.loads(sock.recv())
            if kind == CLOSE:
                sock.send(orjson.dumps((seq, 0, None)))
                return 0
            try:
                written, error = write(kind, payload), None
            except Exception as exc:  # the broker keeps serving; the error shows in its status
                written, error = 0, f"{kind} not written: {type(exc).__name__}: {exc}"
            sock.send(orjson.dumps((seq, written, error)))
    finally:
        sock.close()
        state.close_store()
        if os.getppid() != parent:  # killed with the broker: nobody else will remove its socket
            shutil.rmtree(Path(endpoint.removeprefix("ipc://")).parent, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m arbiter.store.recorder ENDPOINT DATABASE_URL ROOT", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the broker died (PR_SET_PDEATHSIG)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the broker, which closes us in order
    return serve(argv[0], argv[1], Path(argv[2]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
