"""Reading YAML and JSON documents while remembering where every value was written.

Validation errors must point at ``path:line``; plain ``yaml.safe_load``/``json.loads`` throw the
positions away. We compose the YAML node graph (JSON is, for our files, valid YAML) and record
the start mark of every mapping value and sequence item under its key path. Only a file with
something to report needs them, so they are composed on the first :meth:`Document.where`: a
project that validates clean is parsed once, by libyaml when PyYAML has it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KeyPath = tuple[Any, ...]
# libyaml's loader when PyYAML was built with it: the same documents, parsed several times faster
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class Document:
    """Parsed data, and where each value was written: key path → (line, col), both 1-based."""

    path: str
    data: Any
    lines: list[str] = field(default_factory=list)
    text: str = field(default="", repr=False)
    _positions: dict[KeyPath, tuple[int, int]] | None = field(default=None, repr=False, compare=False)

    @property
    def positions(self) -> dict[KeyPath, tuple[int, int]]:
        if self._positions is None:
            self._positions = _positions(self.text)
        return self._positions

    def where(self, keypath: KeyPath) -> tuple[int, int]:
        """The position of ``keypath`` or of its nearest located ancestor (1, 1 if none)."""
        positions = self.positions
        kp = tuple(keypath)
        while kp:
            if kp in positions:
                return positions[kp]
            kp = kp[:-1]
        return positions.get((), (1, 1))

    def line_text(self, line: int) -> str:
        return self.lines[line - 1] if 0 < line <= len(self.lines) else ""


class DocumentError(Exception):
    """A file that cannot be parsed at all, with the position of the problem."""

    def __init__(self, path: str, line: int, col: int, message: str, source_line: str = ""):
        super().__init__(f"{path}:{line}:{col}: {message}")
        self.path, self.line, self.col, self.message = path, line, col, message
        self.source_line = source_line


def _record(node: yaml.Node, keypath: KeyPath, positions: dict[KeyPath, tuple[int, int]]) -> None:
    positions[keypath] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            _record(value_node, keypath + (key,), positions)
            positions[keypath + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record(item, keypath + (index,), positions)


def _positions(text: str) -> dict[KeyPath, tuple[int, int]]:
    try:
        node = yaml.compose(text, Loader=SafeLoader)
    except yaml.YAMLError:
        return {}
    positions: dict[KeyPath, tuple[int, int]] = {}
    if node is not None:
        _record(node, (), positions)
    return positions


def parse_yaml(text: str, path: str) -> Document:
    lines = text.splitlines()
    try:
        data = yaml.load(text, Loader=SafeLoader)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        src = lines[line - 1] if 0 < line <= len(lines) else ""
        raise DocumentError(path, line, col, f"invalid YAML: {problem}", src) from None
    return Document(path, data, lines, text)


def parse_json(text: str, path: str) -> Document:
    lines = text.splitlines()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        src = lines[exc.lineno - 1] if 0 < exc.lineno <= len(lines) else ""
        raise DocumentError(path, exc.lineno, exc.colno, f"invalid JSON: {exc.msg}", src) from None
    return Document(path, data, lines, text)


def read_document(path: Path) -> Document:
    """Read a .json, .yaml or .yml file; undecodable bytes are an error, not a crash."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(str(path), 1, exc.start + 1, "file is not valid UTF-8") from None
    if path.suffix == ".json":
        return parse_json(text, str(path))
    return parse_yaml(text, str(path))
