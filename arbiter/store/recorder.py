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
on an earlier one. What waits in memory is bounded: decision rows beyond ``max_queue`` are
counted as dropped, never blocking the broker, as are the rows of a batch the database refuses;
dead letters beyond ``max_letters``, or refused with a batch, wait in a spill file
(:mod:`.spill`), since a dead letter is the request itself.

Between batches the recorder applies the decision log's retention (:mod:`.retention`), a
bounded amount per round, so the broker's loop never does.

The parent side, :class:`Recorder`, is driven by one thread (the broker's loop: ``submit_*``
per request, :meth:`Recorder.flush` every ``interval_s``, the ``state.batch_ms`` setting) and
needs no lock; ``arbiter route --input`` drives it the same way. Run the child with
``python -m arbiter.store.recorder_process ENDPOINT DATABASE_URL ROOT [RETENTION_JSON]``
(:mod:`.recorder_process`, which also holds what travels between the two).
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import orjson
import zmq

from arbiter.store import dead_letters as letters
from arbiter.store import decisions as record
from arbiter.store import models
from arbiter.store import retention as keeping
from arbiter.store.recorder_process import CIRCUITS, LETTERS, ROWS, TASKS, Message, Run
from arbiter.store.spill import Spill

log = logging.getLogger("arbiter.store.recorder")

DIR_PREFIX = "arbiter-recorder-"
RESPAWN_FIRST_S = 0.05  # a recorder that served a while is replaced at once (well, next flush)
RESPAWN_MAX_S = 5.0
ERRORS_KEPT = 20


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
    in the recorder's batches, in order with the decision rows; the counts are the letters'.

    A dead letter is never dropped for want of room: beyond ``max_queue`` held in memory, and
    whenever the database refuses a batch, letters go to the spill file (:mod:`.spill`) and come
    back as room frees up. Only a letter the spill file cannot take either is counted lost."""

    def __init__(self, recorder: Recorder, max_queue: int, spill: Spill | None = None) -> None:
        super().__init__()
        self._recorder = recorder
        self._max_queue = max_queue
        self.spill = spill
        self.queued = 0  # letters held until the recorder confirms them
        self.spilled = 0  # letters that went to the spill file, in all

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
        item = (models.new_id(), service, letters.as_frames(body), reason, detail, message_id, client, time.time())
        self.hold(item)

    def hold(self, item: letters.Submitted) -> None:
        """Queue a letter for the next batch, or spill it when memory holds enough already."""
        if self.queued < self._max_queue or self.spill is None:
            self.queued += 1
            self._recorder._add(LETTERS, item)
        else:
            self.keep_aside(item)

    def keep_aside(self, item: letters.Submitted) -> None:
        if self.spill is not None and self.spill.add(item):
            self.spilled += 1
        else:
            self.dropped += 1
            self.error(f"a dead letter to {item[1]} was lost: the spill file cannot be written")

    def refill(self, batch: int) -> None:
        """Take spilled letters back while memory has room for them (at most ``batch`` at a time)."""
        if self.spill is None or not self.spill.waiting:
            return
        room = min(batch, self._max_queue - self.queued)
        if room > 0:
            for item in self.spill.take(room):
                self.queued += 1
                self._recorder._add(LETTERS, item)

    @property
    def waiting_in_spill(self) -> int:
        return self.spill.waiting if self.spill is not None else 0

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
        spill: bool = True,
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
        self._command = [sys.executable, "-m", "arbiter.store.recorder_process", self.endpoint, database_url]
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
        self._key = uuid.uuid4().hex  # with the sequence number, a batch's name in the event log
        self._next_flush = 0.0
        self._waiting: list[tuple[int, Callable[[], None]]] = []  # (last batch it waits for, then)
        self.restarts = 0
        self.learned: dict[str, float] = {}  # plugin -> success rate, as the registry last said
        self.dead_letters = DeadLetters(self, max_letters, Spill(Path(root) / ".arbiter") if spill else None)
        if self.dead_letters.spill is not None:
            for item in self.dead_letters.spill.adopt_orphans():  # spilled by a broker that died
                self.dead_letters.hold(item)
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

    def submit_task(self, row: Mapping[str, Any]) -> None:
        """Keep a chain run's or step's state (:func:`runs.task_values`), in order with the rest."""
        self._add(TASKS, dict(row))

    def submit_circuit(self, plugin: str, version: str, circuit: str, reason: str) -> None:
        """Keep a circuit state (:func:`record.save_circuit`), in order with the rows before it."""
        self._add(CIRCUITS, (plugin, version, circuit, reason))

    def when_written(self, then: Callable[[], None]) -> None:
        """Call ``then`` once everything submitted so far is confirmed (written, or refused by
        the database): at once when nothing is held. What reads the store after a change made
        here — resuming a run that just ended — reads the change."""
        self._batch()
        held = [m.seq for m in self._unsent] + list(self._unconfirmed)
        if held:
            self._waiting.append((max(held), then))
        else:
            then()

    def _call_waiting(self) -> None:
        """Call back those whose batches are all confirmed: batches are numbered in order."""
        if not self._waiting:
            return
        held = [m.seq for m in self._unsent] + list(self._unconfirmed)
        first_held = min(held) if held else None
        ready = [then for seq, then in self._waiting if first_held is None or seq < first_held]
        self._waiting = [(seq, then) for seq, then in self._waiting if first_held is not None and seq >= first_held]
        for then in ready:
            then()

    def flush(self) -> None:
        """Send what gathered since the last call and read the recorder's confirmations; start a
        new recorder when the last one died. The broker calls this every ``interval_s``."""
        self._next_flush = time.monotonic() + self.interval_s
        self._watch()
        self.dead_letters.refill(self._max_batch)
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
            rows, unwritten = self._held, self.dead_letters.queued
            kept = self._spill_unwritten()
            log.error(
                "recorder: %d decision row(s) and %d dead letter(s) could not be written before it stopped%s",
                rows,
                unwritten,
                f"; {kept} letter(s) are kept in {self.dead_letters.spill.path}, for the next broker" if kept else "",
            )
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _spill_unwritten(self) -> int:
        """Put the dead letters of the batches the stopped recorder did not confirm in the spill
        file, which the next broker on this store adopts and writes (a letter that was written
        after all is not stored twice: the store skips an id it has); returns how many went."""
        if self.dead_letters.spill is None:
            return 0
        before = self.dead_letters.spilled
        for message in (*sorted(self._unconfirmed.values(), key=lambda m: m.seq), *self._unsent):
            self.dead_letters.queued -= len(message.letters)
            for item in message.letters:
                self.dead_letters.keep_aside(item)
        return self.dead_letters.spilled - before

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
            seq = next(self._seq)
            self._unsent.append(Message.batch(seq, runs, f"{self._key}:{seq}"))
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
                seq, error, letters_error, rates = orjson.loads(self._sock.recv(zmq.NOBLOCK))
            except zmq.Again:
                return
            self.learned.update(rates)
            message = self._unconfirmed.pop(seq, None)
            if message is not None:  # else a confirmation from before a restart, of a batch re-sent
                self._confirmed(message, error, letters_error)
                self._call_waiting()

    def _confirmed(self, message: Message, error: str | None, letters_error: str | None) -> None:
        """Release what a batch held and count it: written, or, when the database refused it even
        after retries, its decision rows dropped with the error (they would be refused again) and
        its dead letters spilled, to be tried again (a dead letter is the request itself)."""
        self._held -= message.rows
        self.dead_letters.queued -= len(message.letters)
        if error is None:
            self.written += message.rows
        else:
            self.dropped += message.rows
            if message.rows or not message.letters:
                self.error(error)
        letters_error = letters_error or (error if message.letters else None)
        if letters_error is None:
            self.dead_letters.written += len(message.letters)
            return
        self.dead_letters.error(letters_error)  # not lost: tried again when the spill file is read back
        for item in message.letters:
            self.dead_letters.keep_aside(item)

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
        return subprocess.Popen(self._command, preexec_fn=die_with_parent if sys.platform == "linux" else None)


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


def die_with_parent() -> None:
    """In the child before exec: end with the broker even when it is killed outright. Linux sends
    the signal when the *thread* that started the child ends: the broker starts and restarts its
    recorder from its main thread, the one that lives as long as the broker."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
