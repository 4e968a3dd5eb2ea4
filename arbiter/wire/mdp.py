"""MDP/0.1 (ZeroMQ RFC 7) and MMI (RFC 8): the frame vocabulary shared by broker, SDK and tests.

The rules for reading a message live here as pure functions. The broker's loop checks the
common, valid shapes inline (it runs for every message) and asks :func:`parse` why a message
it could not read is wrong: every such reason has a short code, the broker counts drops by
that code, and ``arbiter status`` shows the counts.
"""

from __future__ import annotations

from dataclasses import dataclass

MDPC01 = b"MDPC01"
MDPW01 = b"MDPW01"

READY = b"\x01"
REQUEST = b"\x02"
REPLY = b"\x03"
HEARTBEAT = b"\x04"
DISCONNECT = b"\x05"

WORKER_COMMANDS = frozenset({READY, REPLY, HEARTBEAT, DISCONNECT})  # what a worker may send

MMI_PREFIX = "mmi."
MMI_SERVICE = "mmi.service"
OWN_PREFIX = "arbiter."  # the broker's own services: arbiter.route, arbiter.status, ...
RESERVED_PREFIXES = (MMI_PREFIX, OWN_PREFIX)  # no worker may serve a name starting so
MAX_SERVICE_NAME = 255  # RFC 7: service names are short printable strings
MAX_CREDIT = 10_000

# Packed delivery (our extension, docs/PROTOCOL.md §5.1): a worker that adds this word to its
# READY gets each request as [token + first body frame, more body frames...] and answers the
# same way; the token has this fixed length, so no separator is needed.
PACKED = b"packed"
# Batched delivery (§5.2): this word instead, and every frame of a message is one whole request
# (or reply): token + its only body frame. Several travel in one message.
BATCHED = b"batched"
TOKEN_BYTES = 8


class ProtocolError(ValueError):
    """A message that breaks the protocol. ``reason`` is the short code counted by the broker."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ClientRequest:
    """``["", MDPC01, service, body...]`` from a client, after the ROUTER's identity frame."""

    sender: bytes
    service: str
    body: list[bytes]


@dataclass(frozen=True)
class WorkerCommand:
    """``["", MDPW01, command, ...]`` from a worker; ``rest`` holds the frames after the command."""

    sender: bytes
    command: bytes
    rest: list[bytes]


def credit_frame(credit: int) -> bytes:
    """Frame 4 of READY in our credit extension: the request count, as ASCII decimal."""
    if not 1 <= credit <= MAX_CREDIT:
        raise ValueError(f"credit must be between 1 and {MAX_CREDIT}, not {credit}")
    return str(credit).encode("ascii")


def parse_credit(frame: bytes) -> int:
    """Read the credit frame of a READY; a plain MDP worker sends none and gets 1."""
    if not frame.isdigit():
        raise ProtocolError("bad-credit", f"READY credit frame must be an ASCII decimal, got {frame[:20]!r}")
    credit = int(frame)
    if not 1 <= credit <= MAX_CREDIT:
        raise ProtocolError("bad-credit", f"READY credit must be between 1 and {MAX_CREDIT}, got {credit}")
    return credit


def parse_ready_options(frames: list[bytes]) -> tuple[int, bytes | None]:
    """The extension frames of a READY after the service name: (credit, delivery), where
    delivery is ``PACKED``, ``BATCHED`` or None (the MDP form).

    Frame 4 is the credit and frame 5 the delivery word; a plain MDP worker sends neither.
    Anything else there is refused rather than ignored, so a misspelt option is noticed."""
    credit = parse_credit(frames[0]) if frames else 1
    if len(frames) < 2:
        return credit, None
    if len(frames) > 2 or frames[1] not in (PACKED, BATCHED):
        words = f"{PACKED.decode()!r} or {BATCHED.decode()!r}"
        raise ProtocolError("bad-option", f"READY takes a credit and then only {words}, got {frames[1:]!r}")
    return credit, frames[1]


class Tokens:
    """The addresses the broker gives requests it hands to workers: ``TOKEN_BYTES`` bytes, unique
    per broker, and never a zero byte. Workers written in C and C++ (the ZeroMQ guide's among them)
    keep the address frame as a C string, which a zero byte would cut short; so the count is
    written in base 255 with digits 1 to 255, and moved on like an odometer."""

    def __init__(self) -> None:
        self._digits = bytearray(b"\x01" * TOKEN_BYTES)

    def next(self) -> bytes:
        digits, place = self._digits, TOKEN_BYTES - 1
        while digits[place] == 255:
            digits[place] = 1
            place -= 1
        digits[place] += 1
        return bytes(digits)


def pack(token: bytes, body: list[bytes]) -> list[bytes]:
    """A packed REQUEST or REPLY: the token glued to the first body frame (``body`` non-empty)."""
    return [token + body[0], *body[1:]]


def unpack(frames: list[bytes]) -> tuple[bytes, list[bytes]]:
    """(token, body) of a packed message; raises for one too short to hold a token."""
    first = frames[0]
    if len(first) < TOKEN_BYTES:
        raise ProtocolError("malformed-reply", f"a packed message starts with a {TOKEN_BYTES}-byte token")
    return first[:TOKEN_BYTES], [first[TOKEN_BYTES:], *frames[1:]]


def unbatch(frames: list[bytes]) -> list[tuple[bytes, bytes]]:
    """(token, body frame) of every request or reply in a batched message; refuses the whole
    message when any frame is too short to hold a token, so none of it is half-read."""
    if any(len(frame) < TOKEN_BYTES for frame in frames):
        raise ProtocolError("malformed-reply", f"a batched message has a {TOKEN_BYTES}-byte token per frame")
    return [(frame[:TOKEN_BYTES], frame[TOKEN_BYTES:]) for frame in frames]


def service_name(frame: bytes) -> str:
    """A service name frame as text: printable UTF-8, non-empty, bounded."""
    if not frame:
        raise ProtocolError("empty-service", "the service name frame is empty")
    if len(frame) > MAX_SERVICE_NAME:
        raise ProtocolError("long-service", f"service names are at most {MAX_SERVICE_NAME} bytes")
    try:
        name = frame.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("non-utf8", "the service name is not UTF-8") from None
    if not name.isprintable():
        raise ProtocolError("bad-service", "the service name holds unprintable characters")
    return name


def parse(frames: list[bytes]) -> ClientRequest | WorkerCommand:
    """Read one message as received on the broker's ROUTER (identity first).

    Raises :class:`ProtocolError` for anything RFC 7 does not allow; the caller decides whether
    the sender can be told (a known client gets an error reply) or the message is only counted.
    """
    if len(frames) < 3:
        raise ProtocolError("too-few-frames", f"a message needs at least 3 frames, got {len(frames) - 1}")
    sender, delimiter, header = frames[0], frames[1], frames[2]
    if delimiter:
        raise ProtocolError("missing-delimiter", "frame 0 must be empty (the REQ/DEALER delimiter)")
    if header == MDPC01:
        if len(frames) < 4:
            raise ProtocolError("too-few-frames", "a client request needs a service frame")
        return ClientRequest(sender, service_name(frames[3]), frames[4:])
    if header == MDPW01:
        if len(frames) < 4:
            raise ProtocolError("too-few-frames", "a worker message needs a command frame")
        command = frames[3]
        if command not in WORKER_COMMANDS:
            raise ProtocolError("unknown-command", f"unknown or unexpected worker command {command[:4]!r}")
        return WorkerCommand(sender, command, frames[4:])
    raise ProtocolError("bad-header", f"unknown protocol header {header[:12]!r} (expected MDPC01 or MDPW01)")
