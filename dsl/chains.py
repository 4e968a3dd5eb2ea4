"""Chains compiled for execution: references resolved, defaults applied, execution order fixed.

The runner (in the broker) should not re-interpret source: it receives a :class:`ChainPlan`
whose steps name their plugin and command, whose arguments are literals, parameters or
``Ref(step, path)``, and whose conditions are rule-IR conditions over a flat mapping of
``$param`` and ``step.field`` values — the same evaluator as routing rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from . import ast, compiler, ir

DEFAULT_STEP_TIMEOUT_MS = 30_000
DEFAULT_RETRY = 0
ON_FAILURE = ("wait-all", "fail-fast")
DEFAULT_ON_FAILURE = "wait-all"


@dataclass(frozen=True)
class Param:
    name: str


@dataclass(frozen=True)
class Ref:
    """A field of an earlier step's result: ``Ref("prepare", ("issueKey",))``."""

    step: str
    path: tuple[str, ...]


Arg = Union[Param, Ref, Any]


@dataclass(frozen=True)
class StepPlan:
    name: str
    plugin: str
    command: str
    args: tuple[tuple[str, Arg], ...]
    when: ir.Condition | None
    timeout_ms: int
    retry: int
    compensate: str | None
    compensate_args: tuple[tuple[str, Arg], ...]
    source: ir.Source


@dataclass(frozen=True)
class BranchPlan:
    when: ir.Condition
    then: tuple[PlanItem, ...]
    otherwise: tuple[PlanItem, ...]
    source: ir.Source


PlanItem = Union[StepPlan, BranchPlan]


@dataclass(frozen=True)
class ChainPlan:
    """A chain ready to run. ``on_failure`` is what a parallel chain does when a step fails for good:
    ``wait-all`` lets every step run to its end and fails the run afterwards, ``fail-fast`` fails it
    at once and ignores the late answers of the steps still running. Other kinds stop at the first
    failure anyway and keep the default."""

    name: str
    kind: str
    params: tuple[tuple[str, Any], ...]  # (name, default or None)
    timeout_ms: int | None
    items: tuple[PlanItem, ...]
    source: ir.Source
    on_failure: str = DEFAULT_ON_FAILURE  # one of ON_FAILURE


def _arg(value: ast.Value) -> Arg:
    if value.kind == "param":
        return Param(value.value)
    if value.kind == "ref":
        step, *path = str(value.value).split(".")
        return Ref(step, tuple(path))
    return value.value


def _args(args: tuple[tuple[str, ast.Value], ...]) -> tuple[tuple[str, Arg], ...]:
    return tuple((k, _arg(v)) for k, v in args)


def _items(items: tuple[ast.ChainItem, ...], path: str) -> tuple[PlanItem, ...]:
    out: list[PlanItem] = []
    for item in items:
        source = ir.Source(path, item.pos.line, item.pos.col)
        if isinstance(item, ast.Step):
            out.append(
                StepPlan(
                    name=item.name,
                    plugin=item.plugin,
                    command=item.command,
                    args=_args(item.args),
                    when=compiler.condition(item.when) if item.when else None,
                    timeout_ms=item.timeout_ms or DEFAULT_STEP_TIMEOUT_MS,
                    retry=DEFAULT_RETRY if item.retry is None else item.retry,
                    compensate=item.compensate,
                    compensate_args=_args(item.compensate_args),
                    source=source,
                )
            )
        else:
            out.append(
                BranchPlan(compiler.condition(item.cond), _items(item.then, path), _items(item.otherwise, path), source)
            )
    return tuple(out)


def compile_chain(chain: ast.Chain, path: str) -> ChainPlan:
    params = tuple((p.name, p.default.value if p.default else None) for p in chain.params)
    return ChainPlan(
        chain.name,
        chain.kind,
        params,
        chain.timeout_ms,
        _items(chain.items, path),
        ir.Source(path, chain.pos.line, chain.pos.col),
        chain.on_failure or DEFAULT_ON_FAILURE,
    )


def steps(plan_items: tuple[PlanItem, ...]) -> list[StepPlan]:
    out: list[StepPlan] = []
    for item in plan_items:
        if isinstance(item, StepPlan):
            out.append(item)
        else:
            out.extend(steps(item.then))
            out.extend(steps(item.otherwise))
    return out
