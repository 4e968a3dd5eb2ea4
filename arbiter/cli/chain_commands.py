"""``arbiter chain``: the chains of ``rules/*.arb``, and their runs.

``list`` and ``show`` read the project (a plan as a tree or a Mermaid flowchart, to review a chain
before it runs); ``run``, ``resume`` and ``cancel`` ask the broker's ``arbiter.chain`` service,
which runs chains and keeps their state; ``status`` and ``runs`` read that state back from the
store, so a run can be looked at whether or not the broker is up. Run ids may be shortened to any
unique prefix, as with git. Exit codes: 0 ok, 1 a run that did not complete, an unknown run or an
error from the broker, 2 usage.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
import time
from typing import Any, Iterator, Mapping, Optional, Sequence

import click

from arbiter.dsl import chains, ir
from arbiter.dsl.chains import BranchPlan, ChainPlan, Param, PlanItem, Ref, StepPlan
from arbiter.dsl.durations import format_ms
from arbiter.sdk.client import Client, Reply, RequestTimeout
from arbiter.store import database as state
from arbiter.store import runs
from arbiter.wire import envelope as env

from .common import (
    Context,
    broker_endpoint,
    echo_json,
    endpoint_option,
    json_option,
    pass_context,
    summarize_diagnostics,
    unknown_name,
)
from .tables import printable, table

SERVICE = "arbiter.chain"
ENDED = tuple(runs.FINISHED)
DONE_STEP = ("completed", "skipped")
REPLY_WAIT_S = 5.0  # a reply that comes at once: --no-wait, resume, cancel
DEFAULT_WAIT_S = 300.0  # a waited run of a chain this project does not know
WAIT_MARGIN_S = 30.0  # beyond a chain's own bound: the broker's dispatch, fallbacks, a busy queue
COMPENSATION_TRIES = 3  # what a waited saga may spend undoing each step
FOLLOW_POLL_S = 0.5


# -- a plan in words ------------------------------------------------------------------------------


def value_text(value: Any) -> str:
    """A literal as a rule file writes it: strings quoted, ``true``/``false``/``none``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def arg_text(arg: Any) -> str:
    if isinstance(arg, Param):
        return f"${arg.name}"
    if isinstance(arg, Ref):
        return ".".join((arg.step, *arg.path))
    return value_text(arg)


def condition_text(cond: ir.Condition, nested: bool = False) -> str:
    """A compiled condition read back as one line; parentheses only where ``and``/``or`` nest."""
    if isinstance(cond, (ir.All, ir.Any_)):
        if not cond.items:
            return "always" if isinstance(cond, ir.All) else "never"
        word = " and " if isinstance(cond, ir.All) else " or "
        text = word.join(condition_text(item, True) for item in cond.items)
        return f"({text})" if nested and len(cond.items) > 1 else text
    if isinstance(cond, ir.Not):
        return "not " + condition_text(cond.item, True)
    if isinstance(cond, ir.Compare):
        return f"{cond.fact} {cond.op} {value_text(cond.value)}"
    if isinstance(cond, ir.OneOf):
        return f"{cond.fact} in [{', '.join(value_text(v) for v in cond.values)}]"
    if isinstance(cond, ir.Contains):
        return f"{cond.fact} contains {value_text(cond.value)}"
    if isinstance(cond, ir.Matches):
        return f"{cond.fact} matches /{cond.pattern}/{cond.flags}"
    if isinstance(cond, ir.Glob):
        return f"{cond.fact} matches {value_text(cond.pattern)}"
    return cond.fact  # ir.Exists


def with_text(args: tuple[tuple[str, Any], ...]) -> str:
    return ", ".join(f"{key} = {arg_text(arg)}" for key, arg in args)


def on_failure(plan: ChainPlan) -> str | None:
    """A parallel chain's policy when a step fails; None for the other kinds."""
    return getattr(plan, "on_failure", "wait-all") if plan.kind == "parallel" else None


def kind_text(plan: ChainPlan) -> str:
    policy = on_failure(plan)
    return f"{plan.kind} ({policy})" if policy else plan.kind


def params_text(plan: ChainPlan) -> str:
    return ", ".join(name if default is None else f"{name}={value_text(default)}" for name, default in plan.params)


def where(source: ir.Source) -> str:
    return f"{source.path}:{source.line}"


def arg_json(arg: Any) -> dict[str, Any]:
    """Tagged so a script can tell ``$x`` from the string "$x"."""
    if isinstance(arg, Param):
        return {"param": arg.name}
    if isinstance(arg, Ref):
        return {"ref": arg_text(arg)}
    return {"value": arg}


def item_json(item: PlanItem) -> dict[str, Any]:
    if isinstance(item, BranchPlan):
        return {
            "if": condition_text(item.when),
            "then": [item_json(i) for i in item.then],
            "else": [item_json(i) for i in item.otherwise],
            "source": where(item.source),
        }
    undo = {"command": item.compensate, "with": {k: arg_json(a) for k, a in item.compensate_args}}
    return {
        "step": item.name,
        "plugin": item.plugin,
        "command": item.command,
        "with": {key: arg_json(arg) for key, arg in item.args},
        "when": condition_text(item.when) if item.when is not None else None,
        "timeoutMs": item.timeout_ms,
        "retry": item.retry,
        "compensate": undo if item.compensate else None,
        "source": where(item.source),
    }


def plan_json(plan: ChainPlan, items: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": plan.name,
        "kind": plan.kind,
        "onFailure": on_failure(plan),
        "parameters": [{"name": n, "default": d, "required": d is None} for n, d in plan.params],
        "timeoutMs": plan.timeout_ms,
        "steps": len(chains.steps(plan.items)),
        "source": where(plan.source),
    }
    if items:
        data["items"] = [item_json(item) for item in plan.items]
    return data


# -- a plan as an indented tree -------------------------------------------------------------------


def tree_lines(plan: ChainPlan) -> list[str]:
    timeout = f", timeout {format_ms(plan.timeout_ms)}" if plan.timeout_ms else ""
    lines = [f"chain {plan.name} ({kind_text(plan)}{timeout})  {where(plan.source)}"]
    if plan.params:
        lines.append("  parameters: " + ", ".join(_param_word(n, d) for n, d in plan.params))
    lines.append("  steps, all at once:" if plan.kind == "parallel" else "  steps:")
    return lines + _items_lines(plan.items, 2)


def _param_word(name: str, default: Any) -> str:
    return f"${name} (required)" if default is None else f"${name} = {value_text(default)}"


def _items_lines(items: Sequence[PlanItem], depth: int) -> list[str]:
    pad = "  " * depth
    lines: list[str] = []
    for item in items:
        if isinstance(item, BranchPlan):
            lines.append(f"{pad}if {condition_text(item.when)}:")
            lines += _items_lines(item.then, depth + 1) or [f"{pad}  (nothing)"]
            lines.append(f"{pad}else:")
            lines += _items_lines(item.otherwise, depth + 1) or [f"{pad}  (nothing)"]
        else:
            lines += _step_lines(item, pad)
    return lines


def _step_lines(step: StepPlan, pad: str) -> list[str]:
    lines = [f"{pad}{step.name}: {step.plugin} {step.command}"]
    if step.args:
        lines.append(f"{pad}  with {with_text(step.args)}")
    if step.when is not None:
        lines.append(f"{pad}  when {condition_text(step.when)}")
    retry = f", retry {step.retry}" if step.retry else ""
    lines.append(f"{pad}  timeout {format_ms(step.timeout_ms)}{retry}")
    if step.compensate:
        args = f" with {with_text(step.compensate_args)}" if step.compensate_args else ""
        lines.append(f"{pad}  compensate {step.compensate}{args}")
    return lines


# -- a plan as a Mermaid flowchart ----------------------------------------------------------------

Tail = tuple[str, Optional[str]]  # a node the next item is entered from, and the edge's label


def mermaid_label(text: str) -> str:
    """Text inside a quoted Mermaid label: quotes and angle brackets as entity codes."""
    return printable(text).replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


class Flowchart:
    """A ``flowchart TD`` built item by item: each item is entered from the tails the one before
    it left, so sequences, branches and parallel fan-outs compose the same way."""

    def __init__(self) -> None:
        self.lines = ["flowchart TD"]
        self.step_ids: dict[str, str] = {}
        self._branches = 0

    def node(self, node_id: str, shape: str, *texts: str) -> str:
        label = "<br/>".join(mermaid_label(t) for t in texts)
        opening, closing = shape.split("|")
        self.lines.append(f'  {node_id}{opening}"{label}"{closing}')
        return node_id

    def edge(self, source: str, target: str, label: str | None = None, dashed: bool = False) -> None:
        arrow = "-.->" if dashed else "-->"
        self.lines.append(f"  {source} {arrow}{f'|{label}|' if label else ''} {target}")

    def enter(self, tails: Sequence[Tail], target: str) -> None:
        for source, label in tails:
            self.edge(source, target, label)

    def sequence(self, items: Sequence[PlanItem], tails: list[Tail]) -> list[Tail]:
        for item in items:
            tails = self.item(item, tails)
        return tails

    def item(self, item: PlanItem, tails: list[Tail]) -> list[Tail]:
        if isinstance(item, BranchPlan):
            self._branches += 1
            diamond = self.node(f"b{self._branches}", "{|}", condition_text(item.when))
            self.enter(tails, diamond)
            return self.sequence(item.then, [(diamond, "yes")]) + self.sequence(item.otherwise, [(diamond, "no")])
        node_id = f"s{len(self.step_ids) + 1}"
        self.step_ids[item.name] = node_id
        texts = [item.name, f"{item.plugin} {item.command}"]
        if item.when is not None:
            texts.append(f"when {condition_text(item.when)}")
        self.enter(tails, self.node(node_id, "[|]", *texts))
        return [(node_id, None)]

    def compensations(self, plan: ChainPlan) -> None:
        """Dashed edges back: a step that fails undoes the steps before it, newest first. The last
        step's compensation never runs (nothing after it can fail), so it is not drawn."""
        ordered = chains.steps(plan.items)
        undo: str | None = None
        for before, step in zip(ordered, ordered[1:]):
            if before.compensate:
                node_id = "c" + self.step_ids[before.name][1:]
                self.node(node_id, "[|]", f"undo {before.name}", f"{before.plugin} {before.compensate}")
                if undo is not None:
                    self.edge(node_id, undo, dashed=True)
                undo = node_id
            if undo is not None:
                self.edge(self.step_ids[step.name], undo, "fails", dashed=True)
        if undo is not None:
            first = next(self.step_ids[s.name] for s in ordered if s.compensate)
            self.edge("c" + first[1:], self.node("undone", "([|])", "compensated"), dashed=True)


def mermaid(plan: ChainPlan) -> str:
    chart = Flowchart()
    start = chart.node("start", "([|])", f"{plan.name} ({kind_text(plan)})")
    if plan.kind == "parallel":
        ends = [tail for item in plan.items for tail in chart.item(item, [(start, None)])]
        join = chart.node("join", "{{|}}", f"join: {on_failure(plan)}")
        chart.enter(ends, join)
        ends = [(join, None)]
    else:
        ends = chart.sequence(plan.items, [(start, None)])
    chart.enter(ends, chart.node("finish", "([|])", "completed"))
    if plan.kind == "saga":
        chart.compensations(plan)
    return "\n".join(chart.lines)
