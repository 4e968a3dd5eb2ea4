"""Event topics: ``/``-separated segments, and the wildcard patterns subscribers may use.

``*`` matches any characters within one segment (``plugin/*/events``, ``plugin/jira-*/events``);
``**`` as a whole segment matches any number of whole segments, none included (``a/**/b``
matches ``a/b`` and ``a/x/y/b``; ``orchestration/**`` matches ``orchestration`` and everything
under it). A subscription without ``*`` is a plain byte prefix, as ZeroMQ itself applies it.

Matching takes time linear in the topic's length for a pattern of bounded size: the literal
parts between wildcards are found left to right, each at its earliest place, which is always
as good as any later one (a wildcard can absorb whatever lies between). There is no
backtracking, so no pattern can stall the broker; patterns longer than ``MAX_PATTERN``
characters are not accepted as wildcard subscriptions at all.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

MAX_PATTERN = 256  # characters; a longer wildcard subscription is refused
ANY_SEGMENTS = "**"


def is_pattern(topic: str) -> bool:
    return "*" in topic


def acceptable_pattern(pattern: str) -> bool:
    return len(pattern) <= MAX_PATTERN


def _segment_matches(glob: str, text: str) -> bool:
    """``glob`` (``*`` = any characters) against one segment, no ``/`` involved."""
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


def _run_matches(globs: Sequence[str], segments: Sequence[str], start: int) -> bool:
    return all(_segment_matches(g, segments[start + i]) for i, g in enumerate(globs))


def _find_run(globs: Sequence[str], segments: Sequence[str], start: int, end: int) -> int:
    """The first index ``>= start`` where ``globs`` match consecutive segments ending by ``end``."""
    for index in range(start, end - len(globs) + 1):
        if _run_matches(globs, segments, index):
            return index
    return -1


@lru_cache(maxsize=1024)
def _groups(pattern: str) -> tuple[tuple[str, ...], ...]:
    """The pattern's segments split at each ``**`` segment: groups that match runs of segments."""
    groups: list[list[str]] = [[]]
    for segment in pattern.split("/"):
        if segment == ANY_SEGMENTS:
            groups.append([])
        else:
            groups[-1].append(segment.replace("**", "*"))
    return tuple(tuple(group) for group in groups)


def topic_matches(pattern: str, topic: str) -> bool:
    """Whether ``topic`` matches the wildcard ``pattern`` (see the module docstring)."""
    groups = _groups(pattern)
    segments = topic.split("/")
    if len(groups) == 1:  # no ``**``: segment for segment
        return len(groups[0]) == len(segments) and _run_matches(groups[0], segments, 0)
    first, *middle, last = groups
    if len(first) + len(last) > len(segments):
        return False
    if not _run_matches(first, segments, 0) or not _run_matches(last, segments, len(segments) - len(last)):
        return False
    position, end = len(first), len(segments) - len(last)
    for group in middle:
        found = _find_run(group, segments, position, end)
        if found < 0:
            return False
        position = found + len(group)
    return True
