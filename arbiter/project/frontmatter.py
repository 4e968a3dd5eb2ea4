"""YAML frontmatter of agent, command and skill markdown files, read the way real ecosystems write it.

Files in the wild have no frontmatter, unquoted colons that break YAML, missing names, names with
a ``plugin:`` prefix, and strings where lists belong. Reading one must never fail: we return the
best reading we can plus a list of notes that the loader turns into a single located warning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from arbiter.project.documents import SafeLoader

_OPEN = re.compile(r"\A\ufeff?---[ \t]*\r?\n")
_CLOSE = re.compile(r"^---[ \t]*\r?$", re.M)
_KEY_LINE = re.compile(r"^([A-Za-z_][\w\-]*)\s*:(?:\s+(.*)|\s*)$")
_ITEM_LINE = re.compile(r"^\s*-\s+(.*)$")


@dataclass
class Frontmatter:
    meta: dict[str, Any]
    body: str
    body_line: int  # 1-based line where the body starts
    notes: list[tuple[int, str]] = field(default_factory=list)  # (line, message)


def split(text: str) -> tuple[str | None, str, int]:
    """Return (frontmatter text or None, body, 1-based line of the body)."""
    opened = _OPEN.match(text)
    if not opened:
        return None, text, 1
    rest = text[opened.end() :]
    closed = _CLOSE.search(rest)
    if not closed:
        return None, text, 1
    fm = rest[: closed.start()]
    body = rest[closed.end() :].lstrip("\r\n")
    body_line = text[: len(text) - len(body)].count("\n") + 1
    return fm, body, body_line


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def lenient_parse(fm: str) -> dict[str, Any]:
    """Read ``key: value`` lines and ``- item`` lists without YAML's rules on colons."""
    meta: dict[str, Any] = {}
    key: str | None = None
    for raw in fm.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        top = _KEY_LINE.match(raw) if not raw[:1].isspace() else None
        if top:
            key, value = top.group(1), top.group(2)
            meta[key] = _unquote(value) if value else []
            continue
        item = _ITEM_LINE.match(raw)
        if key is not None and item and isinstance(meta.get(key), list):
            meta[key].append(_unquote(item.group(1)))
        elif key is not None and isinstance(meta.get(key), str):
            meta[key] = (meta[key] + " " + raw.strip()).strip()
    return {k: (v if v != [] else "") for k, v in meta.items()}


def parse(text: str) -> Frontmatter:
    """Parse a markdown file's frontmatter, leniently, noting every oddity with its line."""
    fm, body, body_line = split(text)
    if fm is None:
        note = "no frontmatter" if not text.startswith("---") else "frontmatter is never closed with ---"
        return Frontmatter({}, body, body_line, [(1, note)])
    notes: list[tuple[int, str]] = []
    try:
        meta = yaml.load(fm, Loader=SafeLoader)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark else 2
        problem = getattr(exc, "problem", None) or "invalid YAML"
        notes.append((line, f"frontmatter is not valid YAML ({problem}); read leniently"))
        meta = lenient_parse(fm)
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        notes.append((2, f"frontmatter is a {type(meta).__name__}, not a mapping; ignored"))
        meta = {}
    return Frontmatter({str(k): v for k, v in meta.items()}, body, body_line, notes)


def as_list(value: Any) -> tuple[list[str], bool]:
    """Coerce a tags-like value to a list of strings; the flag says a string stood for a list."""
    if value is None or value == "":
        return [], False
    if isinstance(value, str):
        return [p.strip() for p in re.split(r"[,\n]", value) if p.strip()], True
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if v is not None and str(v).strip()], False
    return [str(value)], True


def first_paragraph(body: str, limit: int = 300) -> str:
    """A description for files that declare none: the first prose paragraph of the body."""
    for block in re.split(r"\n\s*\n", body):
        lines = [ln.strip() for ln in block.strip().splitlines()]
        prose = [ln for ln in lines if ln and not ln.startswith(("#", "```", "|", "---", "<"))]
        if prose:
            text = " ".join(prose).lstrip("> ").strip()
            return text[:limit]
    heading = re.search(r"^#+\s*(.+)$", body, re.M)
    return heading.group(1).strip()[:limit] if heading else ""
