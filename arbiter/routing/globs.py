"""File-path globs, one meaning wherever Arbiter matches a path against a pattern: domain file
globs of the vocabulary (classify), a plugin's ``contextPatterns`` (match), an agent's
``contextPatterns`` (the agent team) and ``file matches`` conditions of rules (the engines).

Semantics, as in .gitignore rather than :mod:`fnmatch` (whose ``*`` crosses folders):

- ``**`` spans any number of folders (``**/`` also none at all): ``src/**/*.py`` matches
  ``src/a.py`` and ``src/a/b/c.py``;
- ``*`` matches any run of characters within one folder name, ``?`` one character, neither
  crosses a ``/``: ``src/*.py`` matches ``src/a.py`` but not ``src/a/b.py``;
- a pattern without ``/`` matches the file name in any folder: ``*.tf`` matches ``infra/main.tf``;
- a pattern with a ``/`` matches the whole path from its start;
- every other character stands for itself (``[``, ``]`` and ``.`` included), and case matters.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable


@lru_cache(maxsize=4096)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """The compiled regular expression of a path glob (cached: patterns repeat across requests)."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] in "*?":
            out.append("[^/]*" if pattern[i] == "*" else "[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    prefix = "" if "/" in pattern else "(?:.*/)?"
    return re.compile(prefix + "".join(out) + "$")


def matches_any(pattern: str, paths: Iterable[str]) -> bool:
    """Does any of ``paths`` match the glob ``pattern``? (Most requests name no file: then the
    pattern is not even looked up.)"""
    return any(glob_regex(pattern).match(path) for path in paths)
