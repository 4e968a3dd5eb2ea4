"""Replaying a dead letter through the broker: the letter's frames sent again to the service it
was meant for, and the letter marked replayed once a reply comes. ``arbiter dlq replay`` and the
dashboard both replay this way.

The store does not depend on the SDK: the caller hands in what sends the request (the SDK's
``Client`` fits :class:`Requester`)."""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from arbiter.store import dead_letters as letters
from arbiter.wire import envelope as env


class Reply(Protocol):
    """What a replay reads of the broker's answer."""

    @property
    def ok(self) -> bool: ...

    @property
    def body(self) -> bytes: ...

    attempts: int


class Requester(Protocol):
    """Sends one request to a service through the broker, with retries (an SDK ``Client``)."""

    timeout: float
    retries: int

    def request(self, service: str, body: Any, *, more_frames: Sequence[bytes] = ()) -> Any: ...


def replay_letter(client: Requester, letter_id: str) -> Any:
    """Send a stored letter (ID or a unique prefix) to its service through the broker, with the
    client's retries, and mark it replayed once a reply comes.

    An envelope first frame goes out refreshed where it can be (:func:`letters.replay_body`),
    anything else and any further frames byte for byte. Raises LookupError for an unknown id,
    ``letters.UnreadableLetter`` for a stored body that is not a list of frames (nothing is sent)
    and the client's timeout error when nothing answers; the letter is then left as it was.
    """
    row = letters.find(letter_id)
    frames = letters.frames_of(row)
    first, rest = (frames[0], frames[1:]) if frames else (b"", [])
    body = letters.replay_body(first, client.timeout, client.retries)
    reply = client.request(row.service, body, more_frames=rest)
    letters.mark_replayed(row.id)
    return reply


def reply_json(reply: Reply) -> Any:
    """The reply's body as JSON when it is JSON, else a preview of its bytes."""
    try:
        return env.decode(reply.body)
    except ValueError:
        return letters.preview(reply.body)


def replay_outcome(client: Requester, letter_id: str, failures: tuple[type[Exception], ...]) -> dict[str, Any]:
    """One letter's replay as a dict whether it worked or not; ``failures`` are the client's own
    errors (a timeout) reported in the dict rather than raised."""
    try:
        reply = replay_letter(client, letter_id)
    except (LookupError, letters.UnreadableLetter, *failures) as exc:
        return {"id": letter_id, "ok": False, "error": str(exc)}
    return {"id": letter_id, "ok": reply.ok, "attempts": reply.attempts, "reply": reply_json(reply)}
