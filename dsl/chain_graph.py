"""A chain's plan as a graph: its steps, branches, the join of a parallel chain, and a saga's
compensations, with the edges between them. The command line draws it as a Mermaid flowchart,
the dashboard as boxes on a grid; both read it from here, so they show the same chain.

Each item is entered from the tails the one before it left (a node and the label of the edge
out of it), so sequences, branches and parallel fan-outs compose the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from . import chains, ir
from .chains import BranchPlan, ChainPlan, PlanItem, StepPlan

Tail = tuple[str, Optional[str]]  # a node the next item is entered from, and the edge's label


@dataclass(frozen=True)
class Node:
    """``kind``: start, step, branch, join, end, undo (a compensation) or undone."""

    id: str
    kind: str
    step: StepPlan | None = None  # a step, or the step an undo compensates
    when: ir.Condition | None = None  # a branch's condition


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str | None = None
    dashed: bool = False  # a compensation's way back


@dataclass
class ChainGraph:
    """``parts``: the nodes and edges in the order they were made (a flowchart lists them so)."""

    plan: ChainPlan
    parts: list[Node | Edge] = field(default_factory=list)
    step_ids: dict[str, str] = field(default_factory=dict)

    @property
    def nodes(self) -> list[Node]:
        return [part for part in self.parts if isinstance(part, Node)]

    @property
    def edges(self) -> list[Edge]:
        return [part for part in self.parts if isinstance(part, Edge)]

    def node(self, node: Node) -> str:
        self.parts.append(node)
        return node.id

    def enter(self, tails: Sequence[Tail], target: str) -> None:
        self.parts += [Edge(source, target, label) for source, label in tails]

    def sequence(self, items: Sequence[PlanItem], tails: list[Tail]) -> list[Tail]:
        for item in items:
            tails = self.item(item, tails)
        return tails

    def item(self, item: PlanItem, tails: list[Tail]) -> list[Tail]:
        if isinstance(item, BranchPlan):
            branches = sum(node.kind == "branch" for node in self.nodes)
            diamond = self.node(Node(f"b{branches + 1}", "branch", when=item.when))
            self.enter(tails, diamond)
            return self.sequence(item.then, [(diamond, "yes")]) + self.sequence(item.otherwise, [(diamond, "no")])
        node_id = self.step_ids[item.name] = f"s{len(self.step_ids) + 1}"
        self.enter(tails, self.node(Node(node_id, "step", item)))
        return [(node_id, None)]

    def compensations(self) -> None:
        """Dashed edges back: a step that fails undoes the steps before it, newest first. The last
        step's compensation never runs (nothing after it can fail), so it is not drawn."""
        ordered = chains.steps(self.plan.items)
        undo: str | None = None
        for before, step in zip(ordered, ordered[1:]):
            if before.compensate:
                node_id = self.node(Node("c" + self.step_ids[before.name][1:], "undo", before))
                if undo is not None:
                    self.parts.append(Edge(node_id, undo, dashed=True))
                undo = node_id
            if undo is not None:
                self.parts.append(Edge(self.step_ids[step.name], undo, "fails", dashed=True))
        if undo is not None:
            first = next(self.step_ids[s.name] for s in ordered if s.compensate)
            self.parts.append(Edge("c" + first[1:], self.node(Node("undone", "undone")), dashed=True))


def graph_of(plan: ChainPlan) -> ChainGraph:
    """The whole chain: from its start, through its items (fanned out and joined when parallel),
    to its end; a saga's compensations as dashed edges back."""
    graph = ChainGraph(plan)
    start = graph.node(Node("start", "start"))
    if plan.kind == "parallel":
        ends = [tail for item in plan.items for tail in graph.item(item, [(start, None)])]
        join = graph.node(Node("join", "join"))
        graph.enter(ends, join)
        ends = [(join, None)]
    else:
        ends = graph.sequence(plan.items, [(start, None)])
    graph.enter(ends, graph.node(Node("finish", "end")))
    if plan.kind == "saga":
        graph.compensations()
    return graph


def on_failure(plan: ChainPlan) -> str | None:
    """A parallel chain's policy when a step fails; None for the other kinds."""
    return getattr(plan, "on_failure", "wait-all") if plan.kind == "parallel" else None


def value_text(value: Any) -> str:
    """A literal as a rule file writes it: strings quoted, ``true``/``false``/``none``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


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
