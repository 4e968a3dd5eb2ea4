"""``mmi.service`` (ZeroMQ RFC 8): is a service available?

Request: one frame, the service name. Reply: ``200`` when a worker serves it (or it is one of
Arbiter's own services), ``404`` otherwise; any other ``mmi.*`` name gets ``501``.
Command line: ``arbiter request mmi.service fastapi-backend --raw``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from arbiter.wire.mdp import MMI_SERVICE


def answer(name: str, body: list[bytes], own: Collection[str], served: Callable[[bytes], bool]) -> bytes:
    """The MMI status code for a request to ``name`` with ``body``."""
    if name != MMI_SERVICE:
        return b"501"
    asked = body[0] if body else b""
    return b"200" if asked.decode("utf-8", "replace") in own or served(asked) else b"404"
