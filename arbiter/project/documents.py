"""Reading YAML and JSON documents while remembering where every value was written.

Validation errors must point at ``path:line``; plain ``yaml.safe_load``/``json.loads`` throw the
positions away. We compose the YAML node graph (JSON is, for our files, valid YAML) and record
the start mark of every mapping value and sequence item under its key path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KeyPath = tuple[Any, ...]


@dataclass
class Document:
    """Parsed data plus ``positions``: key path → (line, col), both 1-based."""

    path: str
    data: Any
    positions: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    def where(self, keypath: KeyPath) -> tuple[int, int]:
        """The position of ``keypath`` or of its nearest located ancestor (1, 1 if none)."""
        kp = tuple(keypath)
        while kp:
            if kp in self.positions:
                return self.positions[kp]
            kp = kp[:-1]
        return self.positions.get((), (1, 1))

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
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    positions: dict[KeyPath, tuple[int, int]] = {}
    if node is not None:
        _record(node, (), positions)
    return positions


def parse_yaml(text: str, path: str) -> Document:
    lines = text.splitlines()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        src = lines[line - 1] if 0 < line <= len(lines) else ""
        raise DocumentError(path, line, col, f"invalid YAML: {problem}", src) from None
    return Document(path, data, _positions(text), lines)


def parse_json(text: str, path: str) -> Document:
    lines = text.splitlines()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        src = lines[exc.lineno - 1] if 0 < exc.lineno <= len(lines) else ""
        raise DocumentError(path, exc.lineno, exc.colno, f"invalid JSON: {exc.msg}", src) from None
    return Document(path, data, _positions(text), lines)


def read_document(path: Path) -> Document:
    """Read a .json, .yaml or .yml file; undecodable bytes are an error, not a crash."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(str(path), 1, exc.start + 1, "file is not valid UTF-8") from None
    if path.suffix == ".json":
        return parse_json(text, str(path))
    return parse_yaml(text, str(path))
