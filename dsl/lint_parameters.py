"""Checks of command parameters: what chain steps pass, and the ``parameters`` blocks of the rules.

A command that declares parameters (in its markdown frontmatter) is a contract: a chain step that
passes a name it does not know, leaves out one it requires or passes a literal of another type
would fail at run time, far from the line that caused it. Commands that declare none (most plain
Claude Code plugins) are not checked: nothing says what they take.

Codes: E305 unknown parameter, E306 required parameter not given, E307 value of the wrong type,
E308 binding regex without a group, E104 a parameter bound twice. The checker in :mod:`.lint`
finds plugins and commands (E101, E102) and compiles regexes (E107) before calling these.
"""

from __future__ import annotations

import re
from typing import Callable, Iterator, Sequence

from . import ast, compiler
from .diagnostics import did_you_mean
from .plugin_view import CommandView, ParameterView

Report = Callable[[str, ast.Pos, str, str, str], None]
"""(path, position, code, message, hint): an error."""

_ARTICLE = {"integer": "an integer", "array": "an array", "object": "an object"}
_FITS = {
    "string": ("str", "word"),
    "integer": ("number",),
    "number": ("number",),
    "boolean": ("bool",),
    "array": (),
    "object": (),
}


def _takes(type_: str) -> str:
    return _ARTICLE.get(type_, f"a {type_}")


def _written(value: ast.Value) -> str:
    if value.kind == "str":
        return f'the string "{value.value}"'
    if value.kind == "bool":
        return "true" if value.value else "false"
    if value.kind == "number":
        return f"the number {value.value}"
    return "none" if value.kind == "none" else f"the word '{value.value}'"


def type_problem(value: ast.Value, param: ParameterView, command: str) -> str | None:
    """Why a literal cannot be this parameter's value (None: it can, or it is a reference whose type
    is only known at run time). ``none`` is the absence of a value: fine unless required."""
    if value.kind in ("param", "ref") or param.type not in _FITS:
        return None
    if value.kind == "none" and not param.required:
        return None
    fits = value.kind in _FITS[param.type]
    if fits and param.type == "integer":
        fits = isinstance(value.value, int)
    if fits:
        return None
    return f"parameter '{param.name}' of {command} takes {_takes(param.type)}, not {_written(value)}"


def _arguments(
    report: Report,
    path: str,
    args: Sequence[tuple[str, ast.Value]],
    positions: Sequence[ast.Pos],
    command: CommandView,
) -> None:
    declared = {p.name: p for p in command.parameters}
    for index, (name, value) in enumerate(args):
        where = positions[index] if index < len(positions) else value.pos
        param = declared.get(name)
        if param is None:
            hint = did_you_mean(name, declared) or f"it takes: {', '.join(declared)}"
            report(path, where, "E305", f"{command.name} has no parameter '{name}'", hint)
            continue
        problem = type_problem(value, param, command.name)
        if problem:
            report(path, value.pos, "E307", problem, "")


def _missing(command: CommandView, given: Sequence[tuple[str, ast.Value]]) -> Iterator[str]:
    names = {name for name, _ in given}
    for param in command.parameters:
        if param.required and param.name not in names:
            yield param.name


def check_step(
    report: Report, path: str, step: ast.Step, command: CommandView | None, compensation: CommandView | None
) -> None:
    """A step's ``with`` against its command, and ``compensate ... with`` against the compensation's."""
    if command is not None and command.parameters:
        _arguments(report, path, step.args, step.arg_pos, command)
        for name in _missing(command, step.args):
            message = f"step '{step.name}' does not give {command.name}'s required parameter '{name}'"
            report(path, step.pos, "E306", message, f"add `with {name} = ...`")
    if compensation is not None and compensation.parameters:
        _arguments(report, path, step.compensate_args, step.compensate_arg_pos, compensation)
        undo = compensation.name
        for name in _missing(compensation, step.compensate_args):
            message = f"the compensation {undo} of step '{step.name}' does not give its required parameter '{name}'"
            report(path, step.pos, "E306", message, f"add `{name} = ...` after `compensate {undo} with`")


def _groups(literal: str) -> int | None:
    """How many groups a regex literal has; None when it does not compile (E107, the checker's)."""
    body, _ = compiler.split_regex(literal)
    try:
        return re.compile(body).groups
    except re.error:
        return None


def _binding(report: Report, path: str, item: ast.ParameterBinding, param: ParameterView | None, command: str) -> None:
    positions = item.regex_pos if len(item.regex_pos) == len(item.regexes) else (item.pos,) * len(item.regexes)
    for literal, where in zip(item.regexes, positions):
        if _groups(literal) == 0:
            report(
                path,
                where,
                "E308",
                f"{literal} captures nothing; the value of '{item.name}' is its group 1",
                "put the value in parentheses, e.g. /tenant\\s+([a-z0-9-]+)/; use (?:...) for other groups",
            )
    if param is None:
        return
    if item.regexes and param.type == "object":
        message = f"parameter '{item.name}' of {command} takes an object, which text cannot give"
        report(path, item.pos, "E307", message, "give it with the request, or drop this line")
    problem = type_problem(item.default, param, command) if item.default is not None else None
    if problem and item.default is not None:
        report(path, item.default.pos, "E307", problem, "")


def check_bindings(
    report: Report,
    path: str,
    decl: ast.ParameterBindings,
    command: CommandView | None,
    seen: dict[tuple[str, str, str], tuple[str, int]],
) -> None:
    """One ``parameters`` block: its names against the command's parameters (when it declares any),
    its regexes' groups, its defaults' types, and parameters bound twice across the program."""
    declared = {p.name: p for p in command.parameters} if command is not None else {}
    name = command.name if command is not None else decl.command
    for item in decl.items:
        key = (decl.plugin, name, item.name)
        if key in seen:
            first_path, first_line = seen[key]
            message = f"parameter '{item.name}' of {decl.plugin} {name} is already bound"
            report(path, item.pos, "E104", message, f"first bound at {first_path}:{first_line}")
        seen.setdefault(key, (path, item.pos.line))
        if declared and item.name not in declared:
            hint = did_you_mean(item.name, declared) or f"it takes: {', '.join(declared)}"
            report(path, item.pos, "E305", f"{name} has no parameter '{item.name}'", hint)
        _binding(report, path, item, declared.get(item.name), name)
