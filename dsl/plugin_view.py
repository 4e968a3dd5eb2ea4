"""What the language needs to know of a plugin, and no more.

Lint checks rule files against the project's plugins (unknown plugins, commands, domains,
routes the manifests forbid), but the language stands below the project model: it declares this
narrow view and the project's ``Plugin`` satisfies it structurally, without either importing the
other.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, TypeVar

_View = TypeVar("_View", bound="PluginView")

PARAMETER_TYPES = ("string", "integer", "number", "boolean", "array", "object")
"""The types a command's parameter may declare (JSON's); a parameter view's ``type`` is one of them."""


class NamedPart(Protocol):
    """An agent or skill of a plugin: lint only needs its name."""

    @property
    def name(self) -> str: ...


class ParameterView(Protocol):
    """A parameter a command declares: chain steps and ``parameters`` blocks are checked against it,
    and the compiled bindings carry its type, whether it is required and its default."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def required(self) -> bool: ...

    @property
    def default(self) -> Any: ...


class CommandView(NamedPart, Protocol):
    """A command of a plugin: its name and the parameters it declares (none: nothing is checked)."""

    @property
    def parameters(self) -> Sequence[ParameterView]: ...


class CapabilitiesView(Protocol):
    """The vocabulary a manifest declares, which rules may test."""

    @property
    def domains(self) -> Sequence[str]: ...

    @property
    def contexts(self) -> Sequence[str]: ...

    @property
    def patterns(self) -> Sequence[str]: ...

    @property
    def integrations(self) -> Sequence[str]: ...


class PluginView(Protocol):
    """A plugin as lint reads it: its name, declared capabilities, commands (with their parameters)
    and routing ACLs."""

    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> CapabilitiesView: ...

    @property
    def commands(self) -> Sequence[CommandView]: ...

    def command(self, name: str) -> CommandView | None:
        """The command called ``name`` (with or without its ``prefix:``), or None."""
        ...

    def route_refusal(self: _View, target: _View) -> str | None:
        """Why the manifests forbid this plugin to hand work to ``target``, or None if they allow it."""
        ...
