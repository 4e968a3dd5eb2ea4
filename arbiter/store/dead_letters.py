"""The dead-letter queue: requests the broker could not deliver, kept so nothing is lost silently.

A request that expires in a queue, is refused, is cut short by a shutdown or runs out of
attempts would otherwise vanish; here it becomes one ``dead_letters`` row holding its exact
body frames, so an operator can see what failed and why, and replay it once the cause is fixed
(``arbiter dlq replay`` sends it with the SDK client; :func:`refreshed_envelope` makes it
sendable). A retried request that dies again for the same reason is the same letter with a
higher ``count``, not a new one, so the queue shows problems rather than noise.

The broker must never wait on the database in its poll loop: it hands letters to its recorder
process (:mod:`.recorder`), in order with the decision log, under an id chosen on the broker.
Storing skips an id the store already has (a letter row, or a repeat counted on one), so a batch
sent again after the recorder died is not stored or counted twice. The CLI uses the synchronous
functions (:func:`record`, :func:`list_letters`, :func:`get`, :func:`purge`, :func:`mark_replayed`).
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from arbiter.store import database as state
from arbiter.store import models
from arbiter.wire import envelope as env

# The reasons the broker gives (docs/PROTOCOL.md §6); ``arbiter dlq list --reason`` offers these.
EXPIRED = "expired"  # its deadline (metadata.expiresAt, else request_timeout_ms) passed unanswered
REJECTED = "rejected"  # refused at the door (older brokers kept these; refusals are now only counted)
SHUTDOWN = "shutdown"  # the broker stopped with the request still queued or in flight
EXHAUSTED = "exhausted"  # every dispatch attempt (primary and fallbacks) failed
POISON = "poison"  # every worker that took it was lost while holding it, limits.max_deliveries times
INTERNAL_ERROR = "internal-error"  # the broker failed on it (a bug, logged); it was answered INTERNAL_ERROR
COMPENSATION_FAILED = "compensation-failed"  # a saga's compensation that failed for good (the step to undo)
REASONS = (EXPIRED, SHUTDOWN, EXHAUSTED, POISON, INTERNAL_ERROR, COMPENSATION_FAILED, REJECTED)

DeadLetter = models.DeadLetter
Repeat = models.DeadLetterRepeat
REPEAT_MEMORY = dt.timedelta(days=1)  # how long a repeat's id is kept: re-sends come within seconds


class LetterNotFound(LookupError):
    """No dead letter has this id (or id prefix)."""


class AmbiguousLetterId(LookupError):
    """An id prefix matches more than one dead letter; a longer prefix is needed."""


class UnreadableLetter(ValueError):
    """A letter's stored body is not the JSON list of frames Arbiter writes (the row was damaged
    or written by something else): its frames are unknown, so it cannot be replayed."""


# ---------------------------------------------------------------- frames in the body column


def encode_frames(frames: Sequence[bytes]) -> bytes:
    """The ``body`` column: a JSON list of latin-1 strings, one per frame.

    Latin-1 maps every byte to one code point, so any binary frame (not only UTF-8 text)
    survives the round trip exactly, and the column stays readable JSON on both databases.
    """
    return json.dumps([bytes(frame).decode("latin-1") for frame in frames]).encode("ascii")


def decode_frames(blob: bytes | memoryview | str) -> list[bytes]:
    """The frames of a ``body`` column value (PostgreSQL hands back a memoryview); raises
    :class:`UnreadableLetter` for anything :func:`encode_frames` does not write."""
    try:
        frames = json.loads(blob if isinstance(blob, str) else bytes(blob).decode("ascii"))
        if not isinstance(frames, list) or not all(isinstance(frame, str) for frame in frames):
            raise ValueError("not a JSON list of strings")
        return [frame.encode("latin-1") for frame in frames]
    except (ValueError, TypeError) as exc:  # JSON, ASCII and Latin-1 errors are ValueErrors
        raise UnreadableLetter(f"its stored body is not a list of frames ({exc})") from None


def frames_of(row: models.DeadLetter) -> list[bytes]:
    """The request body frames stored in ``row``, byte for byte as the client sent them."""
    return decode_frames(row.body)


def as_frames(body: Sequence[bytes] | bytes) -> list[bytes]:
    """Copy the frames as bytes; a lone bytes body is one frame, not a sequence of integers."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        return [bytes(body)]
    return [bytes(frame) for frame in body]


# ---------------------------------------------------------------- storing


@dataclass(frozen=True)
class Letter:
    """One dead letter on its way to the database. ``id``: the id the broker gave it (None: a new
    one is drawn when stored); ``at``: when it died, in epoch seconds (None: when it is stored)."""

    service: str
    frames: list[bytes]
    reason: str
    detail: str | None = None
    message_id: str | None = None
    client: str | None = None
    id: str | None = None
    at: float | None = None


# A letter as the broker hands it to the recorder: (id, service, frames, reason, detail,
# message id, client, epoch seconds). A plain tuple, cheap to pickle; :func:`submitted` reads it.
Submitted = tuple[str, str, list[bytes], str, "str | None", "str | None", "str | None", float]


def new_letter(
    service: str,
    body: Sequence[bytes] | bytes,
    reason: str,
    detail: str | None = None,
    message_id: str | None = None,
    client: str | None = None,
    letter_id: str | None = None,
    at: float | None = None,
) -> Letter:
    """Validate and normalise; the message id defaults to the envelope's, so retries merge."""
    if not service:
        raise ValueError("a dead letter needs the service it was sent to")
    if not reason:
        raise ValueError("a dead letter needs a reason")
    frames = as_frames(body)
    if message_id is None and frames:
        envelope = env.as_envelope(frames[0])
        message_id = envelope["messageId"] if envelope else None
    return Letter(service, frames, reason, detail, message_id, client, letter_id, at)


def submitted(item: Submitted) -> Letter:
    """The :class:`Letter` of what the broker handed in."""
    letter_id, service, frames, reason, detail, message_id, client, at = item
    return new_letter(service, frames, reason, detail, message_id, client, letter_id, at)


def _pending_twin(letter: Letter) -> models.DeadLetter | None:
    """The not-yet-replayed letter this one repeats, if any (only letters with an id can repeat)."""
    if letter.message_id is None:
        return None
    # The query names message_id alone, so it is found by its index: given service as well, SQLite
    # (which keeps no statistics to tell the two indexes apart) may search by service, and when
    # many letters of one service come at once every one of them then reads all the others.
    rows = (
        DeadLetter.select()
        .where((DeadLetter.message_id == letter.message_id) & DeadLetter.replayed_at.is_null())
        .order_by(DeadLetter.last_at.desc())
    )
    return next((row for row in rows if row.service == letter.service and row.reason == letter.reason), None)


def _stored_as(letter_id: str) -> str | None:
    """The letter an id already went to: its own row, or the letter it was counted on."""
    if DeadLetter.select(DeadLetter.id).where(DeadLetter.id == letter_id).exists():
        return letter_id
    repeat = Repeat.select(Repeat.letter).where(Repeat.id == letter_id).first()
    return None if repeat is None else str(repeat.letter_id)


def _moment(letter: Letter) -> dt.datetime:
    if letter.at is None:
        return models.now()
    return dt.datetime.fromtimestamp(letter.at, dt.timezone.utc).replace(tzinfo=None)


def store(letter: Letter) -> str:
    """Insert the letter, or count it on its pending twin; returns the id of the row it went to.
    A letter whose id is already stored changes nothing. Call inside :func:`state.writing`."""
    if letter.id is not None and (known := _stored_as(letter.id)) is not None:
        return known
    moment = _moment(letter)
    twin = _pending_twin(letter)
    if twin is not None:
        (
            DeadLetter.update(count=DeadLetter.count + 1, last_at=moment, detail=letter.detail)
            .where(DeadLetter.id == twin.id)
            .execute()
        )
        if letter.id is not None:
            Repeat.insert(id=letter.id, letter=twin.id, at=moment).execute()
        return str(twin.id)
    row_id = letter.id or models.new_id()
    DeadLetter.insert(
        id=row_id,
        message_id=letter.message_id,
        service=letter.service,
        reason=letter.reason,
        detail=letter.detail,
        body=encode_frames(letter.frames),
        client=letter.client,
        first_at=moment,
        last_at=moment,
    ).execute()
    return row_id


def write_letters(letters: Iterable[Letter]) -> list[str]:
    """Store several letters in one transaction; returns their row ids in order."""
    with state.writing():
        return [store(item) for item in letters]


def record(
    service: str,
    body: Sequence[bytes] | bytes,
    reason: str,
    detail: str | None = None,
    message_id: str | None = None,
    client: str | None = None,
) -> str:
    """Store one dead letter now and return its id (the existing letter's id when it repeats one)."""
    item = new_letter(service, body, reason, detail, message_id, client)
    return state.with_retries(write_letters, [item])[0]


def forget_repeats(limit: int) -> int:
    """Delete up to ``limit`` repeat ids older than ``REPEAT_MEMORY`` (the recorder's upkeep);
    returns how many went."""
    return int(state.with_retries(_forget_repeats, limit))


def _forget_repeats(limit: int) -> int:
    old = Repeat.select(Repeat.id).where(Repeat.at < models.now() - REPEAT_MEMORY).limit(limit)
    with state.writing():
        return int(Repeat.delete().where(Repeat.id.in_(old)).execute())


# ---------------------------------------------------------------- reading


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="milliseconds") + "Z"


def summary(row: models.DeadLetter) -> dict[str, Any]:
    """A letter without its body: what listings show. A body that cannot be read is said so
    (``frames`` and ``bytes`` null, ``bodyError`` why), so one damaged row hides no other."""
    try:
        frames = frames_of(row)
    except UnreadableLetter as exc:
        return {**_fields(row), "frames": None, "bytes": None, "bodyError": str(exc)}
    return {**_fields(row), "frames": len(frames), "bytes": sum(len(frame) for frame in frames)}


def _fields(row: models.DeadLetter) -> dict[str, Any]:
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
    }


def list_letters(limit: int = 50, service: str | None = None, reason: str | None = None) -> list[dict[str, Any]]:
    """The most recently failed letters first, optionally only one service's or one reason's."""
    query = DeadLetter.select().order_by(DeadLetter.last_at.desc(), DeadLetter.first_at.desc()).limit(limit)
    if service:
        query = query.where(DeadLetter.service == service)
    if reason:
        query = query.where(DeadLetter.reason == reason)
    return [summary(row) for row in query]


def find(letter_id: str) -> models.DeadLetter:
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
    data["body"] = [] if "bodyError" in data else [preview(frame) for frame in frames_of(row)]
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
        query = query.where(DeadLetter.last_at < models.now() - older_than)
    if service:
        query = query.where(DeadLetter.service == service)
    chosen = [row.id for row in query]
    if dry_run or not chosen:
        return len(chosen)
    return int(state.with_retries(_delete_all, chosen))


def _delete_all(ids: list[str]) -> int:
    with state.writing():
        return sum(_delete(chunk) for chunk in _chunks(ids, 500))


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
    cover every attempt of the replay, as a fresh client request would be. Only what can be read
    is refreshed: ``metadata`` that is not an object, a ``retryCount`` that is not a count or an
    ``expiresAt`` that is not a time stay as they were (the worker sees what it would have seen).
    """
    refreshed = copy.deepcopy(envelope)
    metadata = refreshed.setdefault("metadata", {})
    if not isinstance(metadata, dict):
        return refreshed
    if _is_count(count := metadata.get("retryCount", 0)):
        metadata["retryCount"] = count + 1
    if isinstance(metadata.get("expiresAt"), str) and env.expires_at(refreshed) is not None:
        metadata["expiresAt"] = env.iso(env.utc_now() + dt.timedelta(seconds=timeout * (retries + 1)))
    return refreshed


def replay_body(frame: bytes, timeout: float, retries: int) -> bytes | dict[str, Any]:
    """A letter's first frame as a replay sends it. An envelope is refreshed where it can be
    (:func:`refreshed_envelope`) and handed back as a mapping, so the client counts its own
    retries on it; one whose ``retryCount`` is no count goes as bytes, which the client sends
    unchanged; one whose ``metadata`` is no object, and anything that is no envelope (not JSON,
    not an object), goes byte for byte, as it was sent the first time."""
    data = _envelope(frame)
    if data is None or not isinstance(data.get("metadata", {}), dict):
        return frame
    refreshed = refreshed_envelope(data, timeout, retries)
    return refreshed if _is_count(data.get("metadata", {}).get("retryCount", 0)) else env.encode(refreshed)


def _envelope(frame: bytes) -> dict[str, Any] | None:
    """The frame as an envelope (an object with a messageId and a payload), whatever else it holds."""
    try:
        data = env.decode(frame)
    except ValueError:  # not JSON, or not UTF-8
        return None
    if isinstance(data, dict) and isinstance(data.get("messageId"), str) and isinstance(data.get("payload"), dict):
        return data
    return None


def _is_count(value: Any) -> bool:
    """A retryCount the client can add its own retries to (JSON's true is no count)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def mark_replayed(letter_id: str) -> None:
    """Note that a letter was replayed and answered: a later failure of the same message is then
    a new letter."""
    state.with_retries(_mark_replayed, letter_id)


def _mark_replayed(letter_id: str) -> None:
    with state.writing():
        DeadLetter.update(replayed_at=models.now()).where(DeadLetter.id == letter_id).execute()
