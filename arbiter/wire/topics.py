"""Event topics: ``/``-separated segments, and the wildcard patterns subscribers may use.

``*`` matches within one segment, ``**`` any number of whole segments, none included
(``a/**/b`` matches ``a/b`` and ``a/x/y/b``). A subscription without ``*`` is a plain byte
prefix, as ZeroMQ itself applies it.
"""

from __future__ import annotations

import re
from functools import lru_cache


def is_pattern(topic: str) -> bool:
    return "*" in topic


@lru_cache(maxsize=1024)
def pattern_regex(pattern: str) -> re.Pattern[str]:
    """The pattern as a regular expression anchored at both ends."""
    regex = re.escape(pattern).replace(r"/\*\*/", "/(?:[^/]+/)*").replace(r"/\*\*", "(?:/.*)?")
    regex = regex.replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
    return re.compile(regex + r"\Z")


def topic_matches(pattern: str, topic: str) -> bool:
    return pattern_regex(pattern).match(topic) is not None
