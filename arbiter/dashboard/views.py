"""What the page draws, as JSON: a chain's plan as a graph of steps and their dependencies (from
the project's rules), and the short rows of the decision and dead-letter lists (from the store).

The graph comes laid out in levels (a node's level is the longest path to it from the start), so
the page only places boxes on a grid and draws the edges."""

from __future__ import annotations

from typing import Any, Mapping

from arbiter.dsl.chain_graph import Node, condition_text, graph_of, on_failure
from arbiter.dsl.chains import ChainPlan


def short_source(source: str, root: str) -> str:
    """``file:line`` relative to the project root when it lies inside it (``rules/routing.arb:48``)."""
    prefix = root.rstrip("/") + "/"
    return source[len(prefix) :] if source.startswith(prefix) else source


def _node(node: Node, plan: ChainPlan, root: str) -> dict[str, Any]:
    """One box of the page's graph: what it says, and for a step what it runs."""
    out: dict[str, Any] = {"id": node.id, "kind": node.kind}
    step = node.step
    if node.kind == "step" and step is not None:
        out.update(label=step.name, step=step.name, plugin=step.plugin, command=step.command)
        out["source"] = short_source(f"{step.source.path}:{step.source.line}", root)
        if step.when is not None:
            out["when"] = condition_text(step.when)
        if step.compensate:
            out["compensate"] = step.compensate
        return out
    labels = {"start": plan.name, "join": f"join: {on_failure(plan)}", "end": "done"}
    out["label"] = "if " + condition_text(node.when) if node.when is not None else labels.get(node.kind, node.kind)
    return out


def _levels(nodes: list[dict[str, Any]], edges: list[dict[str, Any]]) -> None:
    """Each node's level (longest path from the start) and place within its level."""
    level = {node["id"]: 0 for node in nodes}
    for _ in range(len(nodes)):  # edges only go forward: settles within len(nodes) passes
        changed = False
        for edge in edges:
            if level[edge["to"]] < level[edge["from"]] + 1:
                level[edge["to"]], changed = level[edge["from"]] + 1, True
        if not changed:
            break
    placed: dict[int, int] = {}
    for node in nodes:
        node["level"] = level[node["id"]]
        node["column"] = placed.get(node["level"], 0)
        placed[node["level"]] = node["column"] + 1


def chain_graph(plan: ChainPlan, root: str = "") -> dict[str, Any]:
    """A chain's plan as the page draws it (:mod:`arbiter.dsl.chain_graph`): a parallel chain
    fans out from its start and joins; a saga's compensations are not drawn."""
    graph = graph_of(plan)
    nodes = [_node(node, plan, root) for node in graph.nodes if node.kind not in ("undo", "undone")]
    edges = [{"from": e.source, "to": e.target, "label": e.label} for e in graph.edges if not e.dashed]
    _levels(nodes, edges)
    return {
        "name": plan.name,
        "kind": plan.kind,
        "params": [{"name": name, "default": default} for name, default in plan.params],
        "source": short_source(f"{plan.source.path}:{plan.source.line}", root),
        "nodes": nodes,
        "edges": edges,
    }


def short_rule_sources(explained: dict[str, Any] | None, root: str) -> dict[str, Any] | None:
    """An ``arbiter.explain`` result with its rules' ``file:line`` relative to the project."""
    for rule in ((explained or {}).get("trace") or {}).get("rulesFired") or []:
        if isinstance(rule, dict) and isinstance(rule.get("source"), str):
            rule["source"] = short_source(rule["source"], root)
    return explained


def decision_row(decision: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded decision as a line of the list (the shape ``routing/decision`` events also fill)."""
    outcome = decision.get("outcome") or {}
    return {
        "requestId": decision.get("requestId"),
        "userInput": decision.get("userInput"),
        "primaryPlugin": decision.get("primaryPlugin"),
        "fallbackPlugins": decision.get("fallbackPlugins") or [],
        "at": decision.get("createdAt"),
        "origin": decision.get("origin"),
        "status": outcome.get("status") if isinstance(outcome, Mapping) else None,
        "durationMs": outcome.get("durationMs") if isinstance(outcome, Mapping) else None,
        "cached": bool(isinstance(outcome, Mapping) and outcome.get("cachedDecision")),
    }


def run_row(run: Mapping[str, Any]) -> dict[str, Any]:
    """A stored chain run with its steps, in the shape the page keeps runs in."""
    steps = [
        {
            "name": step.get("name"),
            "what": step.get("what"),
            "status": step.get("status"),
            "plugin": step.get("plugin"),
            "error": step.get("error"),
        }
        for step in run.get("steps") or []
    ]
    return {
        "runId": run.get("id"),
        "chain": run.get("name"),
        "what": run.get("what"),
        "status": run.get("status"),
        "at": run.get("createdAt"),
        "updatedAt": run.get("updatedAt"),
        "error": run.get("error"),
        "steps": steps,
    }
