"""What a step reads: its arguments (literals, the run's parameters, fields of earlier steps'
results) and its ``when`` conditions, evaluated by the same leaf semantics as routing rules.

A reference to a field an earlier step did not produce is an error of the step that makes it,
named with the path, not a silent ``None``: a chain that reads ``prepare.issueKey`` needs it.
"""

from __future__ import annotations

from typing import Any, Mapping

from arbiter.dsl import ir
from arbiter.dsl.chains import Arg, Param, Ref
from arbiter.routing.engine.python_engine import predicate
from arbiter.routing.engine.semantics import MISSING


class ReferenceError_(LookupError):
    """An argument names a parameter or an earlier step's field that is not there."""


def resolve(arg: Arg, params: Mapping[str, Any], results: Mapping[str, Any]) -> Any:
    if isinstance(arg, Param):
        if arg.name not in params:
            raise ReferenceError_(f"the chain parameter ${arg.name} was not given")
        return params[arg.name]
    if isinstance(arg, Ref):
        if arg.step not in results:
            raise ReferenceError_(f"{arg.step} has no result to read {'.'.join((arg.step, *arg.path))} from")
        value = results[arg.step]
        for part in arg.path:
            if not isinstance(value, Mapping) or part not in value:
                raise ReferenceError_(f"{'.'.join((arg.step, *arg.path))}: the result of {arg.step} has no {part!r}")
            value = value[part]
        return value
    return arg


def arguments(
    args: tuple[tuple[str, Arg], ...], params: Mapping[str, Any], results: Mapping[str, Any]
) -> dict[str, Any]:
    return {name: resolve(arg, params, results) for name, arg in args}


def facts(params: Mapping[str, Any], results: Mapping[str, Any]) -> dict[str, Any]:
    """The flat mapping conditions read: ``$name`` for parameters, ``step.field`` (and deeper,
    ``step.a.b``) for the fields of finished steps' results."""
    flat: dict[str, Any] = {f"${name}": value for name, value in params.items()}
    for step, result in results.items():
        _flatten(step, result, flat)
    return flat


def _flatten(prefix: str, value: Any, out: dict[str, Any], depth: int = 0) -> None:
    if isinstance(value, Mapping) and depth < 8:
        for key, inner in value.items():
            name = f"{prefix}.{key}"
            out[name] = inner
            _flatten(name, inner, out, depth + 1)


def holds(condition: ir.Condition, params: Mapping[str, Any], results: Mapping[str, Any]) -> bool:
    flat = facts(params, results)
    return predicate(condition)(lambda name: flat.get(name, MISSING))
