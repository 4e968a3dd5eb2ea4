"""Command parameters compiled for routed requests: what each parameter is and where text gives it.

A routed request names no parameters of its own most of the time, only text ("onboard tenant
acme-corp"). Before the broker dispatches it, ``arbiter.routing.parameters.bind`` fills the
chosen command's parameters from this table. The table holds every parameter a command declares
(its type, whether it is required, its default), so a required one that stays unbound can be
named, with what the ``parameters`` blocks of the rules add: the regular expressions that read it
from the text and a default of the rule author's. Like the rest of the compiler this is total: a
regular expression that does not compile or has no group is left out here and reported by lint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Mapping

from . import ast, compiler, ir
from .plugin_view import PARAMETER_TYPES, PluginView

REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}

BindingKey = tuple[str, str]
"""(plugin, command as the plugin declares it, e.g. ``jira:prepare``)."""


@dataclass(frozen=True)
class Binding:
    """One parameter of a command and how a routed request's text gives it.

    ``regexes`` are tried in order; the first that matches gives its group 1, converted to
    ``type``. ``default`` (None: none) is the rules' default, else the command's declared one.
    ``source`` is the ``parameters`` line that bound it (None: only declared by the command).
    """

    name: str
    type: str = "string"
    required: bool = False
    regexes: tuple[re.Pattern[str], ...] = ()
    default: Any = None
    source: ir.Source | None = None


def regex(literal: str) -> re.Pattern[str] | None:
    """``/body/flags`` compiled, or None when it does not compile or captures nothing."""
    body, flags = compiler.split_regex(literal)
    mode = 0
    for flag in flags:
        mode |= REGEX_FLAGS.get(flag, 0)
    try:
        pattern = re.compile(body, mode)
    except re.error:
        return None
    return pattern if pattern.groups else None


def literal(value: ast.Value | None) -> Any:
    """A default as written; references are not literals (lint reports them) and give none."""
    if value is None or value.kind in ("param", "ref", "none"):
        return None
    return value.value


def _declared(plugins: Mapping[str, PluginView]) -> dict[BindingKey, dict[str, Binding]]:
    table: dict[BindingKey, dict[str, Binding]] = {}
    for plugin in plugins.values():
        for command in plugin.commands:
            params = {
                p.name: Binding(
                    p.name, p.type if p.type in PARAMETER_TYPES else "string", bool(p.required), default=p.default
                )
                for p in command.parameters
            }
            if params:  # two commands of one name: the first, as ``PluginView.command`` finds it
                table.setdefault((plugin.name, command.name), params)
    return table


def _key(decl: ast.ParameterBindings, plugins: Mapping[str, PluginView]) -> BindingKey:
    """The block's command under the name its plugin declares (``prepare`` finds ``jira:prepare``)."""
    plugin = plugins.get(decl.plugin)
    command = plugin.command(decl.command) if plugin is not None else None
    return (decl.plugin, command.name if command is not None else decl.command)


def _bind(current: Binding | None, item: ast.ParameterBinding, path: str) -> Binding:
    base = current or Binding(item.name)
    patterns = tuple(p for p in (regex(r) for r in item.regexes) if p is not None)
    default = literal(item.default)
    return replace(
        base,
        regexes=patterns,
        default=base.default if default is None else default,
        source=ir.Source(path, item.pos.line, item.pos.col),
    )


def compile_bindings(
    modules: tuple[ast.Module, ...], plugins: Mapping[str, PluginView]
) -> dict[BindingKey, tuple[Binding, ...]]:
    """Every command's declared parameters, with the program's ``parameters`` lines applied.

    Blocks for the same command in several files add up; a parameter bound twice keeps its first
    line (lint reports the second). Parameters a command declares come first, in its order."""
    table = _declared(plugins)
    for module in modules:
        for decl in module.decls:
            if not isinstance(decl, ast.ParameterBindings):
                continue
            entry = table.setdefault(_key(decl, plugins), {})
            for item in decl.items:
                current = entry.get(item.name)
                if current is None or current.source is None:
                    entry[item.name] = _bind(current, item, module.path)
    return {key: tuple(params.values()) for key, params in table.items()}
