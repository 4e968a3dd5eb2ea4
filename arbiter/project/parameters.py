"""The parameters a command declares in its frontmatter, read as leniently as the rest of it.

The usual shape is a list of mappings::

    parameters:
      - {name: tenantId, type: string, required: true, description: tenant id, e.g. acme-corp}

A mapping of name to spec (``tenantId: {type: string}`` or just ``tenantId: string``) and bare
names are read too. Whatever cannot be read is left out with a note, which the loader turns into
its one warning for the file: a command file never fails to load because of its parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from arbiter.dsl.plugin_view import PARAMETER_TYPES

TYPE_ALIASES = {
    "str": "string",
    "text": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "list": "array",
    "dict": "object",
    "map": "object",
}
_NAME = re.compile(r"[A-Za-z_][\w\-]*")
_TRUE, _FALSE = ("true", "yes", "on"), ("false", "no", "off")


@dataclass(frozen=True)
class Parameter:
    """One declared parameter. ``type`` is one of PARAMETER_TYPES; ``default`` None means none."""

    name: str
    type: str = "string"
    required: bool = False
    description: str = ""
    default: Any = None


def _kind(value: Any) -> str:
    """What a YAML value is, in the words of the file's author (frozen lists are tuples here)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (list, tuple)):
        return "list"
    return "string" if isinstance(value, str) else type(value).__name__


def _type(name: str, raw: Any, notes: list[str]) -> str:
    if raw is None:
        return "string"
    text = str(raw).strip().lower()
    text = TYPE_ALIASES.get(text, text)
    if text not in PARAMETER_TYPES:
        notes.append(f"parameter '{name}' has the unknown type '{raw}'; read as a string")
        return "string"
    return text


def _required(name: str, raw: Any, notes: list[str]) -> bool:
    if raw is None or isinstance(raw, bool):
        return bool(raw)
    text = str(raw).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    notes.append(f"'required' of parameter '{name}' is neither true nor false; read as false")
    return False


def fits(value: Any, type_: str) -> bool:
    """Is a plain (YAML/JSON) value of the declared type?"""
    if type_ == "string":
        return isinstance(value, str)
    if type_ == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_ == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if type_ == "boolean":
        return isinstance(value, bool)
    if type_ == "array":
        return isinstance(value, (list, tuple))
    return isinstance(value, Mapping)


def _parameter(name: str, spec: Mapping[str, Any], notes: list[str]) -> Parameter:
    type_ = _type(name, spec.get("type"), notes)
    default = spec.get("default")
    if default is not None and not fits(default, type_):
        notes.append(f"the default of parameter '{name}' is not of its type {type_}; kept as written")
    description = spec.get("description")
    return Parameter(
        name=name,
        type=type_,
        required=_required(name, spec.get("required"), notes),
        description=" ".join(str(description).split()) if description is not None else "",
        default=default,
    )


def _entries(raw: Any, notes: list[str]) -> list[tuple[str, Mapping[str, Any]]]:
    """(name, spec) pairs from either shape; entries that name nothing are noted and dropped."""
    if isinstance(raw, Mapping):
        pairs = []
        for name, spec in raw.items():
            if isinstance(spec, str) or spec is None:
                pairs.append((str(name), {"type": spec}))
            elif isinstance(spec, Mapping):
                pairs.append((str(name), spec))
            else:
                notes.append(f"parameter '{name}' is a {_kind(spec)}, not a mapping; ignored")
        return pairs
    pairs = []
    for index, entry in enumerate(raw, 1):
        if isinstance(entry, str) and _NAME.fullmatch(entry.strip()):
            pairs.append((entry.strip(), {}))
        elif isinstance(entry, Mapping) and isinstance(entry.get("name"), str) and entry["name"].strip():
            pairs.append((entry["name"].strip(), entry))
        else:
            notes.append(f"parameter {index} has no name; ignored")
    return pairs


def read_parameters(raw: Any) -> tuple[tuple[Parameter, ...], list[str]]:
    """The parameters of a command's ``parameters`` frontmatter value, and notes on what was odd."""
    notes: list[str] = []
    if raw is None or raw == "":
        return (), notes
    if not isinstance(raw, (Mapping, list, tuple)):
        notes.append(f"'parameters' is a {_kind(raw)}, not a list of {{name, type, required}}; ignored")
        return (), notes
    out: dict[str, Parameter] = {}
    for name, spec in _entries(raw, notes):
        if name in out:
            notes.append(f"parameter '{name}' is declared twice; the first is kept")
            continue
        out[name] = _parameter(name, spec, notes)
    return tuple(out.values()), notes
