"""The dead-letter queue: requests the broker could not deliver, kept so nothing is lost silently.

A request that expires in a queue, names a service nobody serves, is refused, is cut short by a
shutdown or runs out of attempts would otherwise vanish; here it becomes one ``dead_letters``
row holding its exact body frames, so an operator can see what failed and why, and replay it
once the cause is fixed. A retried request that dies again for the same reason is the same
letter with a higher ``count``, not a new one, so the queue shows problems rather than noise.

The broker must never wait on the database in its poll loop, so it hands letters to
:class:`DeadLetterWriter`, a thread that stores them in batches; the CLI uses the synchronous
functions (:func:`record`, :func:`list_letters`, :func:`get`, :func:`purge`, :func:`replay`).
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime as dt
import json
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from arbiter.sdk.client import Client, Reply, RequestTimeout, _Outgoing
from arbiter.store import database as state
from arbiter.wire import envelope as env

EXPIRED = "expired"  # metadata.expiresAt passed before a worker took the request
UNDELIVERABLE = "undeliverable"  # no worker serves the service, or its queue is full
REJECTED = "rejected"  # the broker refused the request (too large, malformed envelope, ...)
SHUTDOWN = "shutdown"  # the broker stopped with the request still queued or in flight
EXHAUSTED = "exhausted"  # every dispatch attempt (primary and fallbacks) failed
REASONS = (EXPIRED, UNDELIVERABLE, REJECTED, SHUTDOWN, EXHAUSTED)

DeadLetter = state.DeadLetter


class LetterNotFound(LookupError):
    """No dead letter has this id (or id prefix)."""


class AmbiguousLetterId(LookupError):
    """An id prefix matches more than one dead letter; a longer prefix is needed."""


# ---------------------------------------------------------------- frames in the body column


def encode_frames(frames: Sequence[bytes]) -> bytes:
    """The ``body`` column: a JSON list of latin-1 strings, one per frame.

    Latin-1 maps every byte to one code point, so any binary frame (not only UTF-8 text)
    survives the round trip exactly, and the column stays readable JSON on both databases.
    """
    return json.dumps([bytes(frame).decode("latin-1") for frame in frames]).encode("ascii")


def decode_frames(blob: bytes | memoryview | str) -> list[bytes]:
    """The frames of a ``body`` column value (PostgreSQL hands back a memoryview)."""
    text = blob if isinstance(blob, str) else bytes(blob).decode("ascii")
    return [frame.encode("latin-1") for frame in json.loads(text)]


def frames_of(row: state.DeadLetter) -> list[bytes]:
    """The request body frames stored in ``row``, byte for byte as the client sent them."""
    return decode_frames(row.body)


def _as_frames(body: Sequence[bytes] | bytes) -> list[bytes]:
    """Copy the frames as bytes; a lone bytes body is one frame, not a sequence of integers."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        return [bytes(body)]
    return [bytes(frame) for frame in body]


# ---------------------------------------------------------------- storing


@dataclass(frozen=True)
class Letter:
    """One dead letter on its way to the database."""

    service: str
    frames: list[bytes]
    reason: str
    detail: str | None = None
    message_id: str | None = None
    client: str | None = None


def _letter(
    service: str,
    body: Sequence[bytes] | bytes,
    reason: str,
    detail: str | None,
    message_id: str | None,
    client: str | None,
) -> Letter:
    """Validate and normalise; the message id defaults to the envelope's, so retries merge."""
    if not service:
        raise ValueError("a dead letter needs the service it was sent to")
    if not reason:
        raise ValueError("a dead letter needs a reason")
    frames = _as_frames(body)
    if message_id is None and frames:
        envelope = env.as_envelope(frames[0])
        message_id = envelope["messageId"] if envelope else None
    return Letter(service, frames, reason, detail, message_id, client)


def _pending_twin(letter: Letter) -> state.DeadLetter | None:
    """The not-yet-replayed letter this one repeats, if any (only letters with an id can repeat)."""
    if letter.message_id is None:
        return None
    return (
        DeadLetter.select()
        .where(
            (DeadLetter.message_id == letter.message_id)
            & (DeadLetter.service == letter.service)
            & (DeadLetter.reason == letter.reason)
            & DeadLetter.replayed_at.is_null()
        )
        .order_by(DeadLetter.last_at.desc())
        .first()
    )


def _store(letter: Letter) -> str:
    """Insert the letter, or count it on its pending twin; call inside a transaction."""
    moment = state.now()
    twin = _pending_twin(letter)
    if twin is not None:
        (
            DeadLetter.update(count=DeadLetter.count + 1, last_at=moment, detail=letter.detail)
            .where(DeadLetter.id == twin.id)
            .execute()
        )
        return str(twin.id)
    row = DeadLetter.create(
        id=state.new_id(),
        message_id=letter.message_id,
        service=letter.service,
        reason=letter.reason,
        detail=letter.detail,
        body=encode_frames(letter.frames),
        client=letter.client,
        first_at=moment,
        last_at=moment,
    )
    return str(row.id)


def write_letters(letters: Iterable[Letter]) -> list[str]:
    """Store several letters in one transaction; returns their row ids in order."""
    with state.writing():
        return [_store(letter) for letter in letters]


def record(
    service: str,
    body: list[bytes],
    reason: str,
    detail: str | None = None,
    message_id: str | None = None,
    client: str | None = None,
) -> str:
    """Store one dead letter now and return its id (the existing letter's id when it repeats one)."""
    return write_letters([_letter(service, body, reason, detail, message_id, client)])[0]


class DeadLetterWriter:
    """A thread that stores dead letters in batches, so the broker's loop never waits on the database.

    ``submit`` never blocks: when the queue is full the letter is counted in ``dropped`` rather
    than stalling the broker. After the first letter of a batch the thread waits up to
    ``interval_s`` for more (``batch_ms`` in configs/state.yaml), so a burst of failures costs
    one transaction, not one each. ``close`` drains what is queued.
    """

    def __init__(self, max_batch: int = 200, max_queue: int = 10_000, interval_s: float = 0.05) -> None:
        self._queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue(maxsize=max_queue)
        self._max_batch = max_batch
        self._interval = interval_s
        self.dropped = 0
        self.written = 0
        self.batches = 0
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, name="arbiter-dead-letter-writer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Letters submitted and not yet written."""
        return self._queue.qsize()

    def submit(
        self,
        service: str,
        body: list[bytes],
        reason: str,
        detail: str | None = None,
        message_id: str | None = None,
        client: str | None = None,
    ) -> None:
        """Queue a letter; parsing and encoding happen on the writer thread, not the caller's."""
        try:
            self._queue.put_nowait((service, body, reason, detail, message_id, client))
        except queue.Full:
            self.dropped += 1

    def _collect(self, first: tuple[Any, ...]) -> tuple[list[tuple[Any, ...]], bool]:
        """The first item plus whatever arrives within the interval, up to a batch; True on stop."""
        batch, deadline = [first], time.monotonic() + self._interval
        while len(batch) < self._max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _write(self, batch: list[tuple[Any, ...]]) -> None:
        try:
            state.with_retries(write_letters, [_letter(*item) for item in batch])
            self.written += len(batch)
            self.batches += 1
        except Exception as exc:  # keep serving; the error is reported by status
            self.errors.append(f"{type(exc).__name__}: {exc}")
            del self.errors[:-20]

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch, stop = self._collect(item)
            self._write(batch)
            if stop:
                return

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, then stop the thread (waiting at most ``timeout`` seconds)."""
        self._queue.put(None)
        self._thread.join(timeout)


# ---------------------------------------------------------------- reading


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="milliseconds") + "Z"


def summary(row: state.DeadLetter) -> dict[str, Any]:
    """A letter without its body: what listings show."""
    frames = frames_of(row)
    return {
        "id": row.id,
        "messageId": row.message_id,
        "service": row.service,
        "reason": row.reason,
        "detail": row.detail,
        "count": row.count,
        "client": row.client,
        "firstAt": _iso(row.first_at),
        "lastAt": _iso(row.last_at),
        "replayedAt": _iso(row.replayed_at),
        "frames": len(frames),
        "bytes": sum(len(frame) for frame in frames),
    }


def list_letters(limit: int = 50, service: str | None = None, reason: str | None = None) -> list[dict[str, Any]]:
    """The most recently failed letters first, optionally only one service's or one reason's."""
    query = DeadLetter.select().order_by(DeadLetter.last_at.desc(), DeadLetter.first_at.desc()).limit(limit)
    if service:
        query = query.where(DeadLetter.service == service)
    if reason:
        query = query.where(DeadLetter.reason == reason)
    return [summary(row) for row in query]


def find(letter_id: str) -> state.DeadLetter:
    """The letter with this id, or with the one id starting with this prefix (like git)."""
    prefix = letter_id.strip().lower()
    if not prefix:
        raise LetterNotFound("an empty id matches no dead letter")
    exact = DeadLetter.get_or_none(DeadLetter.id == prefix)
    if exact is not None:
        return exact
    matches = list(DeadLetter.select().where(DeadLetter.id.startswith(prefix)).limit(2))
    if not matches:
        raise LetterNotFound(f"no dead letter with id '{letter_id}'")
    if len(matches) > 1:
        raise AmbiguousLetterId(f"id prefix '{letter_id}' matches several dead letters; give more characters")
    return matches[0]


def preview(frame: bytes) -> dict[str, Any]:
    """A frame as UTF-8 text when it is text, otherwise base64, so any body can be shown and copied."""
    try:
        return {"size": len(frame), "encoding": "utf-8", "data": frame.decode("utf-8")}
    except UnicodeDecodeError:
        return {"size": len(frame), "encoding": "base64", "data": base64.b64encode(frame).decode("ascii")}


def get(letter_id: str) -> dict[str, Any]:
    """One letter with its body frames decoded for reading; raises LookupError when not found."""
    row = find(letter_id)
    data = summary(row)
    data["body"] = [preview(frame) for frame in frames_of(row)]
    return data


def hex_preview(frame: bytes, limit: int = 64) -> str:
    """The first bytes of a binary frame as hex, for people rather than scripts."""
    text = binascii.hexlify(frame[:limit], " ").decode("ascii")
    return text + (" ..." if len(frame) > limit else "")


# ---------------------------------------------------------------- purging


def purge(
    ids: Sequence[str] | None = None,
    older_than: dt.timedelta | None = None,
    service: str | None = None,
    dry_run: bool = False,
) -> int:
    """Delete letters matching every filter given (ids or id prefixes, age of last failure, service).

    With no filter at all every letter goes; callers that take input from people guard that.
    ``dry_run`` only counts. Raises LookupError when an id matches nothing or several letters.
    """
    query = DeadLetter.select(DeadLetter.id)
    if ids is not None:
        query = query.where(DeadLetter.id.in_([find(letter_id).id for letter_id in ids]))
    if older_than is not None:
        query = query.where(DeadLetter.last_at < state.now() - older_than)
    if service:
        query = query.where(DeadLetter.service == service)
    chosen = [row.id for row in query]
    if dry_run or not chosen:
        return len(chosen)
    with state.database.atomic():
        return sum(_delete(chunk) for chunk in _chunks(chosen, 500))


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    """SQLite limits bound parameters per statement, so large deletes go in slices."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _delete(ids: list[str]) -> int:
    return int(DeadLetter.delete().where(DeadLetter.id.in_(ids)).execute())


# ---------------------------------------------------------------- replaying


def refreshed_envelope(envelope: dict[str, Any], timeout: float, retries: int) -> dict[str, Any]:
    """The stored envelope made sendable again: same messageId, one more retry, a future expiry.

    The original ``expiresAt`` has passed (often the very reason it died), so it is pushed to
    cover every attempt of the replay, as a fresh client request would be.
    """
    refreshed = env.mark_retry(copy.deepcopy(envelope))
    metadata = refreshed["metadata"]
    if "expiresAt" in metadata:
        metadata["expiresAt"] = env.iso(env.utc_now() + dt.timedelta(seconds=timeout * (retries + 1)))
    return refreshed


class _FramesClient(Client):
    """The SDK client, for bodies of several frames (``Client.request`` sends one body frame)."""

    def request_frames(self, service: str, body: bytes | dict[str, Any], rest: list[bytes]) -> Reply:
        """Lazy Pirate exactly as ``Client.request``, with ``rest`` sent after the first body frame."""
        if isinstance(body, dict):
            outgoing = _Outgoing(service, None, body)
        else:
            outgoing = _Outgoing(service, body, None)
        for attempt in range(self.retries + 1):
            sock = self._connect()
            sock.send_multipart(outgoing.frames(attempt) + rest)
            frames = self._await_reply(sock, outgoing, self.timeout)
            if frames is not None:
                return Reply(service, frames[3:], attempts=attempt + 1)
            self._reset()
        raise RequestTimeout(service, self.retries + 1, self.timeout)


def _send(endpoint: str, service: str, frames: list[bytes], timeout: float, retries: int) -> Reply:
    """Send the body frames to ``service``; an envelope first frame goes out refreshed."""
    first, rest = (frames[0], frames[1:]) if frames else (b"", [])
    envelope = env.as_envelope(first)
    body: bytes | dict[str, Any] = refreshed_envelope(envelope, timeout, retries) if envelope else first
    with _FramesClient(endpoint, timeout=timeout, retries=retries, source="arbiter-dlq") as client:
        if not rest:
            return client.request(service, body)
        return client.request_frames(service, body, rest)


def replay(letter_id: str, endpoint: str, timeout: float, retries: int) -> Reply:
    """Re-send a letter to its service through the broker frontend and return the reply.

    The letter is marked replayed once a reply arrives (a later failure of the same message is
    then a new letter). Raises LookupError for an unknown id and ``RequestTimeout`` when
    nothing answers; the letter is then left as it was.
    """
    row = find(letter_id)
    reply = _send(endpoint, row.service, frames_of(row), timeout, retries)
    DeadLetter.update(replayed_at=state.now()).where(DeadLetter.id == row.id).execute()
    return reply
