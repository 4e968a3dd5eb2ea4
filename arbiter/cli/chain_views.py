"""How a chain and a run look: a plan as a text tree, JSON or a Mermaid flowchart, a run (a
broker's reply or the store's rows) as tables and lines. ``arbiter chain`` prints them."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Mapping, Sequence

from arbiter.dsl import chains, ir
from arbiter.dsl.chain_graph import Node, condition_text, graph_of, on_failure, value_text
from arbiter.dsl.chains import BranchPlan, ChainPlan, Param, PlanItem, Ref, StepPlan
from arbiter.dsl.durations import format_ms
from arbiter.store import runs

from .tables import printable, table

ENDED = tuple(runs.FINISHED)
DONE_STEP = ("completed", "skipped")


# -- a plan in words ------------------------------------------------------------------------------


def arg_text(arg: Any) -> str:
    if isinstance(arg, Param):
        return f"${arg.name}"
    if isinstance(arg, Ref):
        return ".".join((arg.step, *arg.path))
    return value_text(arg)


def with_text(args: tuple[tuple[str, Any], ...]) -> str:
    return ", ".join(f"{key} = {arg_text(arg)}" for key, arg in args)


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
    lines = [f"chain {plan.name}: {kind_text(plan)}{timeout}  {where(plan.source)}"]
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


def mermaid_label(text: str) -> str:
    """Text inside a quoted Mermaid label: quotes and angle brackets as entity codes."""
    return printable(text).replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


SHAPES = {
    "start": "([|])",
    "step": "[|]",
    "branch": "{|}",
    "join": "{{|}}",
    "end": "([|])",
    "undo": "[|]",
    "undone": "([|])",
}


def _texts(node: Node, plan: ChainPlan) -> list[str]:
    """What a node of the flowchart says, line by line."""
    step = node.step
    if node.kind == "step" and step is not None:
        return [step.name, f"{step.plugin} {step.command}"] + (
            [f"when {condition_text(step.when)}"] if step.when else []
        )
    if node.kind == "undo" and step is not None:
        return [f"undo {step.name}", f"{step.plugin} {step.compensate}"]
    if node.kind == "branch" and node.when is not None:
        return [condition_text(node.when)]
    words = {"start": f"{plan.name} ({plan.kind})", "join": f"join: {on_failure(plan)}", "end": "completed"}
    return [words.get(node.kind, "compensated")]


def mermaid(plan: ChainPlan) -> str:
    """A ``flowchart TD`` of the chain (:mod:`arbiter.dsl.chain_graph` says what is drawn)."""
    lines = ["flowchart TD"]
    for part in graph_of(plan).parts:
        if isinstance(part, Node):
            opening, closing = SHAPES[part.kind].split("|")
            label = "<br/>".join(mermaid_label(t) for t in _texts(part, plan))
            lines.append(f'  {part.id}{opening}"{label}"{closing}')
        else:
            arrow = "-.->" if part.dashed else "-->"
            lines.append(f"  {part.source} {arrow}{f'|{part.label}|' if part.label else ''} {part.target}")
    return "\n".join(lines)


# -- runs in words --------------------------------------------------------------------------------


def duration_text(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    minutes, seconds = divmod(int(ms // 1000), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _moment(iso: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(iso.rstrip("Z")) if iso else None


def _short_time(iso: str | None) -> str:
    return "-" if not iso else iso[:19].replace("T", " ")


def took_ms(run: Mapping[str, Any]) -> float | None:
    """How long a run took, from the store's times; None while it runs."""
    start = _moment(run.get("createdAt"))
    end = _moment(run.get("completedAt") or (run.get("updatedAt") if run.get("status") in ENDED else None))
    return None if start is None or end is None else (end - start).total_seconds() * 1000


def stored_run(row: Mapping[str, Any]) -> dict[str, Any]:
    """A run as the store keeps it (:func:`runs.get`), in the shape the broker answers with, so
    ``status --json`` and ``run --json`` read alike."""
    meta = row.get("meta") or {}
    times = {key: row.get(key) for key in ("createdAt", "updatedAt", "completedAt")}
    return {
        "runId": row["id"],
        "chain": row["name"],
        "what": row.get("what"),
        "kind": meta.get("chainKind"),
        "status": row["status"],
        "params": meta.get("params") or {},
        "resumed": meta.get("resumed") or 0,
        "result": row.get("result"),
        "error": row.get("error"),
        "traceId": meta.get("traceId"),
        **times,
        "steps": [_stored_step(step) for step in row.get("steps") or ()],
    }


def _stored_step(row: Mapping[str, Any]) -> dict[str, Any]:
    meta = row.get("meta") or {}
    keys = ("name", "what", "status", "plugin", "command", "result", "error", "updatedAt")
    return {**{key: row.get(key) for key in keys}, "tries": meta.get("tries"), "ms": meta.get("ms")}


def _step_label(step: Mapping[str, Any]) -> str:
    return f"{step.get('name')} (undo)" if step.get("what") == "compensation" else str(step.get("name"))


def steps_table(steps: Sequence[Mapping[str, Any]]) -> list[str]:
    errors = any(step.get("error") for step in steps)
    columns = ["STEP", "STATUS", "PLUGIN", "COMMAND", "TRIES", "MS"] + (["ERROR"] if errors else [])
    rows = []
    for step in steps:
        ms = step.get("ms")
        row = [_step_label(step), step.get("status"), step.get("plugin"), step.get("command"), step.get("tries")]
        rows.append(
            row + [round(ms) if isinstance(ms, (int, float)) else None] + ([step.get("error")] if errors else [])
        )
    return table(columns, rows, numeric={"TRIES", "MS"})


def outcome_lines(run: Mapping[str, Any]) -> list[str]:
    """The run's error, or its result as indented JSON (escaped: it is a worker's text)."""
    if run.get("error"):
        return ["", f"error: {printable(run['error'])}"]
    if run.get("result") is None:
        return []
    text = json.dumps(run["result"], indent=2, ensure_ascii=False, default=str)
    return ["", "result:", *printable(text, keep="\n").splitlines()]


def run_lines(run: Mapping[str, Any]) -> list[str]:
    """A run as the broker answered it: one line, its steps, then its result or error."""
    trace = f"  trace {run['traceId']}" if run.get("traceId") else ""
    lines = [printable(f"run {run.get('runId')}  {run.get('chain')}  {run.get('status')}{trace}")]
    steps = run.get("steps") or []
    return lines + (steps_table(steps) if steps else ["no steps ran"]) + outcome_lines(run)


def status_lines(run: Mapping[str, Any]) -> list[str]:
    """A stored run: what ran with what, when, how long, whether it was resumed; each step."""
    chain = f"{run['chain']} ({run['kind']})" if run.get("kind") else run["chain"]
    resumed = run.get("resumed") or 0
    fields = [
        ["run:", run["runId"]],
        ["chain:", chain],
        ["status:", run["status"]],
        ["params:", json.dumps(run.get("params") or {}, ensure_ascii=False, default=str)],
        ["started:", _short_time(run.get("createdAt"))],
        ["took:", duration_text(took_ms(run))],
        ["resumed:", f"{resumed} time{'s' if resumed != 1 else ''}" if resumed else "no"],
    ]
    if run.get("traceId"):
        fields.append(["trace:", run["traceId"]])
    steps = run["steps"]
    lines = table(["FIELD", "VALUE"], fields, header=False) + [""]
    return lines + (steps_table(steps) if steps else ["no steps yet"]) + outcome_lines(run)


def steps_to_take(items: Sequence[PlanItem], started: set[str]) -> int:
    """How many steps a run of ``items`` takes: of an if/else, the branch holding a step that
    started, else the longer one (the run has not reached it)."""
    count = 0
    for item in items:
        if isinstance(item, StepPlan):
            count += 1
            continue
        branches = [(steps_to_take(b, started), {s.name for s in chains.steps(b)}) for b in (item.then, item.otherwise)]
        taken = [size for size, names in branches if names & started]
        count += taken[0] if taken else max(size for size, _ in branches)
    return count


def ended_badly(status: str | None) -> bool:
    return status in ENDED and status != "completed"


# -- the broker's arbiter.chain service ---------------------------------------------------------
