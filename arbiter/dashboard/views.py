"""What the page draws, as JSON: a chain's plan as a graph of steps and their dependencies (from
the project's rules), and the short rows of the decision and dead-letter lists (from the store).

The graph comes laid out in levels (a node's level is the longest path to it from the start), so
the page only places boxes on a grid and draws the edges."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from arbiter.dsl import ir
from arbiter.dsl.chains import BranchPlan, ChainPlan, PlanItem

Tail = tuple[str, Any]  # a node the next item is entered from, and the edge's label


def short_source(source: str, root: str) -> str:
    """``file:line`` relative to the project root when it lies inside it (``rules/routing.arb:48``)."""
    prefix = root.rstrip("/") + "/"
    return source[len(prefix) :] if source.startswith(prefix) else source


def _literal(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value).lower()


def condition_text(cond: Any) -> str:
    """A compiled condition as one short line (a branch's label)."""
    if isinstance(cond, (ir.All, ir.Any_)):
        word = " and " if isinstance(cond, ir.All) else " or "
        return word.join(condition_text(item) for item in cond.items) or "always"
    if isinstance(cond, ir.Not):
        return "not " + condition_text(cond.item)
    if isinstance(cond, ir.Compare):
        return f"{cond.fact} {cond.op} {_literal(cond.value)}"
    if isinstance(cond, ir.OneOf):
        return f"{cond.fact} in [{', '.join(_literal(v) for v in cond.values)}]"
    if isinstance(cond, ir.Contains):
        return f"{cond.fact} contains {_literal(cond.value)}"
    return str(getattr(cond, "fact", "condition"))


@dataclass
class Graph:
    """Nodes and edges built item by item: each item is entered from the tails the one before left."""

    nodes: list[dict[str, Any]] = field(default_factory=list)
    edges: list[dict[str, Any]] = field(default_factory=list)

    def node(self, node_id: str, kind: str, label: str, **extra: Any) -> str:
        self.nodes.append({"id": node_id, "kind": kind, "label": label, **extra})
        return node_id

    def enter(self, tails: Sequence[Tail], target: str) -> None:
        self.edges += [{"from": source, "to": target, "label": label} for source, label in tails]

    def sequence(self, items: Sequence[PlanItem], tails: list[Tail]) -> list[Tail]:
        for item in items:
            tails = self.item(item, tails)
        return tails

    root: str = ""

    def where(self, source: ir.Source) -> str:
        return short_source(f"{source.path}:{source.line}", self.root)

    def item(self, item: PlanItem, tails: list[Tail]) -> list[Tail]:
        if isinstance(item, BranchPlan):
            branch = self.node(f"if{len(self.nodes)}", "branch", "if " + condition_text(item.when))
            self.enter(tails, branch)
            yes = self.sequence(item.then, [(branch, "yes")])
            no = self.sequence(item.otherwise, [(branch, "no")]) if item.otherwise else [(branch, "no")]
            return yes + no
        extra = {"plugin": item.plugin, "command": item.command, "source": self.where(item.source)}
        if item.when is not None:
            extra["when"] = condition_text(item.when)
        if item.compensate:
            extra["compensate"] = item.compensate
        self.enter(tails, self.node(f"step:{item.name}", "step", item.name, step=item.name, **extra))
        return [(f"step:{item.name}", None)]

    def levels(self) -> None:
        """Each node's level (longest path from the start) and place within its level."""
        level = {node["id"]: 0 for node in self.nodes}
        for _ in range(len(self.nodes)):  # edges only go forward: settles within len(nodes) passes
            changed = False
            for edge in self.edges:
                if level[edge["to"]] < level[edge["from"]] + 1:
                    level[edge["to"]], changed = level[edge["from"]] + 1, True
            if not changed:
                break
        placed: dict[int, int] = {}
        for node in self.nodes:
            node["level"] = level[node["id"]]
            node["column"] = placed.get(node["level"], 0)
            placed[node["level"]] = node["column"] + 1


def chain_graph(plan: ChainPlan, root: str = "") -> dict[str, Any]:
    """A chain's plan as the page draws it: a parallel chain fans out from its start and joins."""
    graph = Graph(root=root)
    start = graph.node("start", "start", plan.name)
    if plan.kind == "parallel":
        ends = [tail for item in plan.items for tail in graph.item(item, [(start, None)])]
        join = graph.node("join", "join", f"join: {getattr(plan, 'on_failure', 'wait-all')}")
        graph.enter(ends, join)
        ends = [(join, None)]
    else:
        ends = graph.sequence(plan.items, [(start, None)])
    graph.enter(ends, graph.node("end", "end", "done"))
    graph.levels()
    return {
        "name": plan.name,
        "kind": plan.kind,
        "params": [{"name": name, "default": default} for name, default in plan.params],
        "source": graph.where(plan.source),
        "nodes": graph.nodes,
        "edges": graph.edges,
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
