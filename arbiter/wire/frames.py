"""Multipart send and receive without pyzmq's convenience layer, for the broker's hot path.

``send_multipart``/``recv_multipart`` build flag enums per frame (``SNDMORE | flags``, and the
option enum of each ``RCVMORE`` read); on a broker that moves twenty frames per round trip that
was a third of its time (docs/PERFORMANCE.md). These call the Cython socket methods with plain
integer flags.
Non-blocking only: the broker never waits on a socket outside its poller.
"""

from __future__ import annotations

import zmq
from zmq.backend import Socket as _Raw

_SEND = _Raw.send
_RECV = _Raw.recv
_GET = _Raw.get
_MORE_NOWAIT = int(zmq.SNDMORE) | int(zmq.NOBLOCK)
_NOWAIT = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


def send_frames(sock: zmq.Socket, frames: list[bytes]) -> None:
    """Send all frames or raise (``zmq.Again`` at the high-water mark, ``EHOSTUNREACH`` for a
    ROUTER_MANDATORY peer that is gone); ZeroMQ delivers a multipart message whole or not at all."""
    last = len(frames) - 1
    for index, frame in enumerate(frames):
        _SEND(sock, frame, _MORE_NOWAIT if index < last else _NOWAIT)


def recv_frames(sock: zmq.Socket) -> list[bytes]:
    """Receive one whole message; raises ``zmq.Again`` when none is waiting. Reading each part
    as a Frame tells whether more follow without a RCVMORE socket option call per frame."""
    frame = _RECV(sock, _NOWAIT, False)
    parts = [frame.bytes]
    while frame.more:
        frame = _RECV(sock, _NOWAIT, False)
        parts.append(frame.bytes)
    return parts


def recv_frames_from(sock: zmq.Socket) -> tuple[list[bytes], str]:
    """:func:`recv_frames`, and who sent it: the ZAP User-Id its connection was given (empty
    when no authentication ran)."""
    frame = _RECV(sock, _NOWAIT, False)
    parts = [frame.bytes]
    while frame.more:
        frame = _RECV(sock, _NOWAIT, False)
        parts.append(frame.bytes)
    return parts, frame.get("User-Id") or ""


def has_input(sock: zmq.Socket) -> bool:
    """Whether a message is waiting (``ZMQ_EVENTS``). Like a read that fails, the check processes
    the socket's pending commands, so the socket's FD may be slept on after a False; unlike it,
    it raises nothing: pyzmq's ``zmq.Again`` costs more than twice as much."""
    return bool(_GET(sock, _EVENTS) & _POLLIN)
