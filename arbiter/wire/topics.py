"""Event topics: ``/``-separated segments, and the wildcard patterns subscribers may use.

``*`` matches any characters within one segment (``plugin/*/events``, ``plugin/jira-*/events``);
``**`` as a whole segment matches any number of whole segments, none included (``a/**/b``
matches ``a/b`` and ``a/x/y/b``; ``orchestration/**`` matches ``orchestration`` and everything
under it). A subscription without ``*`` is a plain byte prefix, as ZeroMQ itself applies it.
The same matcher, split at ``.``, reads the service patterns of permission rules, so a
wildcard means one thing wherever Arbiter accepts one.

Matching takes time linear in the topic's length for a pattern of bounded size: the runs of
segments between ``**`` are found left to right, each at its earliest place, which is always
as good as any later one (a ``**`` can absorb whatever lies between). Each run is searched with
a bit-parallel automaton, one step per segment, and each distinct segment is compared with the
run's globs once. There is no backtracking, so no pattern can stall the broker; patterns longer
than ``MAX_PATTERN`` characters are not accepted as wildcard subscriptions at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping, Sequence

MAX_PATTERN = 256  # characters; a longer wildcard subscription is refused
ANY_SEGMENTS = "**"
SEPARATOR = "/"


def is_pattern(topic: str) -> bool:
    return "*" in topic


def acceptable_pattern(pattern: str) -> bool:
    return len(pattern) <= MAX_PATTERN


def _segment_matches(glob: str, text: str) -> bool:
    """``glob`` (``*`` = any characters) against one segment, no separator involved."""
    if "*" not in glob:
        return glob == text
    first, *middle, last = glob.split("*")
    if len(first) + len(last) > len(text) or not text.startswith(first) or not text.endswith(last):
        return False
    position, end = len(first), len(text) - len(last)
    for chunk in middle:
        found = text.find(chunk, position, end)
        if found < 0:
            return False
        position = found + len(chunk)
    return True


@dataclass(frozen=True)
class _Run:
    """A run of segment globs between ``**``, with what a search needs to advance one segment
    at a time: for each literal the positions it may fill (as bits), the positions any segment
    fills (a glob of stars only), and the globs that must be tried."""

    globs: tuple[str, ...]
    literals: Mapping[str, int]
    wild: int
    partial: tuple[tuple[str, int], ...]

    @classmethod
    def of(cls, globs: Sequence[str]) -> _Run:
        wild = sum(1 << i for i, glob in enumerate(globs) if glob and not glob.strip("*"))
        literals: dict[str, int] = {}
        partial: dict[str, int] = {}  # each distinct glob is tried once per segment
        for i, glob in enumerate(globs):
            if "*" not in glob:
                literals[glob] = literals.get(glob, 0) | (1 << i)
            elif glob.strip("*"):
                partial[glob] = partial.get(glob, 0) | (1 << i)
        return cls(tuple(globs), literals, wild, tuple(partial.items()))

    def at(self, segments: Sequence[str], start: int) -> bool:
        """Whether the run matches ``segments`` from ``start`` on (the caller checked the length)."""
        return all(_segment_matches(glob, segments[start + i]) for i, glob in enumerate(self.globs))

    def _fits(self, segment: str, seen: dict[str, int]) -> int:
        """The positions ``segment`` may fill, as bits (remembered per distinct segment)."""
        bits = seen.get(segment)
        if bits is None:
            bits = self.literals.get(segment, 0) | self.wild
            for glob, bit in self.partial:
                if _segment_matches(glob, segment):
                    bits |= bit
            seen[segment] = bits
        return bits

    def find(self, segments: Sequence[str], start: int, end: int) -> int:
        """The first index ``>= start`` where the run matches, ending by ``end``; -1 if none."""
        if not self.globs:
            return start
        state, done, seen = 0, 1 << (len(self.globs) - 1), {}
        for index in range(start, end):
            state = ((state << 1) | 1) & self._fits(segments[index], seen)
            if state & done:
                return index - len(self.globs) + 1
        return -1


@lru_cache(maxsize=4096)
def _runs(pattern: str, separator: str) -> tuple[_Run, ...]:
    """The pattern's segments split at each ``**`` segment: one run more than there are ``**``."""
    runs: list[list[str]] = [[]]
    for segment in pattern.split(separator):
        if segment == ANY_SEGMENTS:
            runs.append([])
        else:
            runs[-1].append(segment)
    return tuple(_Run.of(run) for run in runs)


def topic_matches(pattern: str, topic: str, separator: str = SEPARATOR) -> bool:
    """Whether ``topic`` matches the wildcard ``pattern`` (see the module docstring); another
    ``separator`` matches other dotted names, such as services, the same way."""
    runs = _runs(pattern, separator)
    segments = topic.split(separator)
    first, last = runs[0], runs[-1]
    if len(runs) == 1:  # no ``**``: segment for segment
        return len(segments) == len(first.globs) and first.at(segments, 0)
    if sum(len(run.globs) for run in runs) > len(segments):
        return False
    end = len(segments) - len(last.globs)
    if not first.at(segments, 0) or not last.at(segments, end):
        return False
    position = len(first.globs)
    for run in runs[1:-1]:
        found = run.find(segments, position, end)
        if found < 0:
            return False
        position = found + len(run.globs)
    return True
