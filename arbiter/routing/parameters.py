"""A routed request's command parameters: what the client gave, what the text says, the defaults.

A routed request is mostly text ("onboard tenant acme-corp with its own realm"); the command the
router picks needs parameters (``tenantId``). :func:`bind` fills them from the compiled bindings
(``RulesBundle.bindings``, from the commands' frontmatter and the rules' ``parameters`` blocks)
in a fixed order: what the client gave wins, then the text, then the defaults. What stays unbound
and is required is named in ``missing``, so the broker can ask for it instead of sending a request
the worker would refuse.

Pure: no snapshot, no I/O. The caller passes the text the rules read (cut at ``max_text_chars``),
so a binding's regex never runs on an unbounded text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from arbiter.dsl.bindings import Binding, BindingKey

_ITEMS = re.compile(r"\s*(?:,|;|\band\b)\s*")
_TRUE = ("true", "yes", "on", "1", "enabled")
_FALSE = ("false", "no", "off", "0", "disabled")


@dataclass(frozen=True)
class Bound:
    """The parameters to send, the required ones still missing (declaration order), and where each
    value came from: ``given``, ``text`` or ``default``."""

    parameters: dict[str, Any] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    sources: dict[str, str] = field(default_factory=dict)


def convert(text: str, type_: str) -> Any | None:
    """A captured piece of text as a value of the declared type, or None when it is not one.

    string: as captured, trimmed; integer: whole digits; number: digits with an optional decimal
    part; boolean: true/false, yes/no, on/off, 1/0, enabled/disabled; array: the items between
    commas, semicolons and "and"; object: never (text does not say one)."""
    text = text.strip()
    if not text or type_ == "object":
        return None
    if type_ == "integer":
        return int(text) if re.fullmatch(r"[+-]?\d+", text) else None
    if type_ == "number":
        if re.fullmatch(r"[+-]?\d+", text):
            return int(text)
        return float(text) if re.fullmatch(r"[+-]?(\d+\.\d*|\.\d+)", text) else None
    if type_ == "boolean":
        lowered = text.lower()
        return True if lowered in _TRUE else False if lowered in _FALSE else None
    if type_ == "array":
        items = [item for item in _ITEMS.split(text) if item]
        return items or None
    return text


def from_text(binding: Binding, text: str) -> Any | None:
    """The first regex that matches and whose group 1 converts gives the value (None: none does)."""
    for pattern in binding.regexes:
        found = pattern.search(text)
        if found is None or found.group(1) is None:
            continue
        value = convert(found.group(1), binding.type)
        if value is not None:
            return value
    return None


def _plain(value: Any) -> Any:
    """A default as plain JSON data the caller may change (frontmatter defaults are frozen)."""
    return json.loads(json.dumps(value, default=lambda v: dict(v) if isinstance(v, Mapping) else str(v)))


class BindingTable:
    """The compiled bindings, found by a command's declared name or that name without its
    ``prefix:`` (``prepare`` finds ``jira:prepare``) in one look-up: made once per snapshot."""

    def __init__(self, bindings: Mapping[BindingKey, tuple[Binding, ...]] | None = None):
        self.exact = dict(bindings or {})
        self.short: dict[BindingKey, tuple[Binding, ...]] = {}
        for (plugin, name), entries in self.exact.items():
            self.short.setdefault((plugin, name.split(":")[-1]), entries)

    def get(self, plugin: str, command: str) -> tuple[Binding, ...]:
        found = self.exact.get((plugin, command))
        return found if found is not None else self.short.get((plugin, command.split(":")[-1]), ())


def bind(
    plugin: str,
    command_name: str,
    text: str,
    given: Mapping[str, Any],
    bindings: BindingTable | Mapping[BindingKey, tuple[Binding, ...]],
    declared_only: bool = False,
) -> Bound:
    """Fill ``plugin``'s ``command_name`` parameters for a routed request.

    Every given parameter is kept as given (a given ``None`` counts as not given); a declared one
    not given is read from ``text`` by its bindings, else takes its default; a required one that
    is still unbound is in ``missing``. A command nothing is known of keeps what was given.
    ``bindings``: a :class:`BindingTable` (a plain mapping is indexed on each call).
    ``declared_only``: keep only the given parameters the command declares (parameters given for
    a request's primary, passed on to the plan's other phases)."""
    table = bindings if isinstance(bindings, BindingTable) else BindingTable(bindings)
    declared = table.get(plugin, command_name)
    names = {binding.name for binding in declared}
    parameters = {
        name: value for name, value in given.items() if value is not None and (not declared_only or name in names)
    }
    sources = {name: "given" for name in parameters}
    missing: list[str] = []
    for binding in declared:
        if binding.name in parameters:
            continue
        value = from_text(binding, text) if text else None
        if value is not None:
            parameters[binding.name], sources[binding.name] = value, "text"
        elif binding.default is not None:
            parameters[binding.name], sources[binding.name] = _plain(binding.default), "default"
        elif binding.required:
            missing.append(binding.name)
    return Bound(parameters, tuple(missing), sources)


@dataclass(frozen=True)
class Call:
    """What one plugin is asked for a routed request: a command (None: it has none) and its
    parameters as bound, with what is still missing."""

    command: str | None
    bound: Bound

    @property
    def missing(self) -> tuple[str, ...]:
        return self.bound.missing


def call_for(
    plugin: str,
    commands: Sequence[str],
    text: str,
    given: Mapping[str, Any],
    bindings: BindingTable,
    declared_only: bool = False,
) -> Call:
    """The first of ``commands`` (best first) whose required parameters all bind; when none
    does, the first, with what it misses, so the caller can ask for exactly that."""
    first: Call | None = None
    for command in commands:
        call = Call(command, bind(plugin, command, text, given, bindings, declared_only))
        if not call.missing:
            return call
        first = first or call
    return first or Call(None, Bound({} if declared_only else {k: v for k, v in given.items() if v is not None}))
