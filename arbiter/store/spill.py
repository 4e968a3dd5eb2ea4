"""Dead letters the broker cannot hold in memory, kept in a file until the database takes them.

A dead letter is a request the broker accepted and then could not deliver: losing it would lose
the request for good. The recorder holds a bounded number in memory; a flood of expiring
requests, or a database that refuses batches for a while, would otherwise drop the rest. So
what does not fit goes to an append-only file of JSON lines under ``.arbiter/``, and is read back
as room frees up. Every letter carries the id the broker gave it, and the store skips an id it
already has, so a letter read back twice (say, after the broker was killed between reading it and
forgetting it) is stored once.

One file per broker process (its pid in the name); a broker starting up adopts the files of
processes that are gone, so letters spilled before a crash are written after the restart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from arbiter.store.dead_letters import Submitted

PREFIX = "dead-letters-"
SUFFIX = ".spill"


def _encode(item: Submitted) -> bytes:
    letter_id, service, frames, reason, detail, message_id, client, at = item
    frames_text = [bytes(frame).decode("latin-1") for frame in frames]  # every byte survives
    record = [letter_id, service, frames_text, reason, detail, message_id, client, at]
    return json.dumps(record, ensure_ascii=True).encode("ascii") + b"\n"


def _decode(line: bytes) -> Submitted:
    letter_id, service, frames_text, reason, detail, message_id, client, at = json.loads(line)
    return (letter_id, service, [f.encode("latin-1") for f in frames_text], reason, detail, message_id, client, at)


class Spill:
    """The overflow file of one broker: ``add`` appends, ``take`` reads back in order."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / f"{PREFIX}{os.getpid()}{SUFFIX}"
        self._offset = 0  # bytes of the file already read back
        self.waiting = 0  # letters in the file not yet read back
        self.errors = 0

    def add(self, item: Submitted) -> bool:
        """Append one letter; False when the file cannot be written (the caller counts it lost)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as out:
                out.write(_encode(item))
        except OSError:
            self.errors += 1
            return False
        self.waiting += 1
        return True

    def take(self, limit: int) -> list[Submitted]:
        """Up to ``limit`` letters, oldest first; the file goes once everything was read back."""
        if not self.waiting or limit <= 0:
            return []
        taken: list[Submitted] = []
        with open(self.path, "rb") as source:
            source.seek(self._offset)
            for line in source:
                if len(taken) >= limit:
                    break
                self._offset += len(line)
                if line.endswith(b"\n"):
                    taken.append(_decode(line))
        self.waiting -= len(taken)
        if not self.waiting:
            self.path.unlink(missing_ok=True)
            self._offset = 0
        return taken

    def adopt_orphans(self) -> Iterator[Submitted]:
        """The letters other broker processes spilled and left behind when they died."""
        for path in sorted(self.folder.glob(f"{PREFIX}*{SUFFIX}")):
            pid = path.name[len(PREFIX) : -len(SUFFIX)]
            if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
                continue
            for line in path.read_bytes().splitlines(keepends=True):
                if line.endswith(b"\n"):
                    yield _decode(line)
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
