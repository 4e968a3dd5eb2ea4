"""A rule's action as the explain JSON carries it (typed: ``{"action": "prefer", "plugin": ...,
"weight": 15.0}``, each kind always with the same keys) and as ``arbiter explain`` prints it
(a one-liner in the words of the .arb language). Scripts and the dashboard read the JSON; no
Python repr reaches them."""

from __future__ import annotations

from typing import Any

from arbiter.dsl import ir


def action_json(action: ir.Action) -> dict[str, Any]:
    """One action as JSON, named by its .arb keyword."""
    if isinstance(action, ir.Prefer):
        return {"action": "prefer", "plugin": action.plugin, "weight": float(action.weight)}
    if isinstance(action, ir.Require):
        return {"action": "require", "plugin": action.plugin}
    if isinstance(action, ir.Exclude):
        return {"action": "exclude", "plugin": action.plugin}
    if isinstance(action, ir.Collaborate):
        return {
            "action": "collaborate",
            "plugin": action.plugin,
            "domain": action.domain,
            "after": list(action.after),
            "parallel": action.parallel,
        }
    if isinstance(action, ir.SetStrategy):
        return {"action": "strategy", "strategy": action.strategy}
    if isinstance(action, ir.AssertFact):
        return {"action": "assert", "fact": action.name, "value": action.value}
    if isinstance(action, ir.RetractFact):
        return {"action": "retract", "fact": action.name}
    raise TypeError(f"not a rule action: {type(action).__name__}")


def action_line(data: dict[str, Any]) -> str:
    """An action (as :func:`action_json` gives it) as the .arb text that asks for it."""
    kind = data["action"]
    if kind == "prefer":
        verb = "prefer" if data["weight"] >= 0 else "avoid"
        return f"{verb} {data['plugin']} by {abs(data['weight']):g}"
    if kind == "collaborate":
        on = f" on {data['domain']}" if data["domain"] else ""
        after = f" after {', '.join(data['after'])}" if data["after"] else ""
        return f"collaborate {data['plugin']}{on}{after}{' parallel' if data['parallel'] else ''}"
    if kind == "strategy":
        return f"strategy {data['strategy']}"
    if kind == "assert":
        return f"assert {data['fact']}" + ("" if data["value"] is True else f" = {data['value']!r}")
    if kind == "retract":
        return f"retract {data['fact']}"
    return f"{kind} {data['plugin']}"
