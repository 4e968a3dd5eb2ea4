"""What a request is estimated to cost: one model for the decision and its agent team.

The work of a routed request is done by agents: one specialist per phase of the plan and, when
the plan has more than one phase, a coordinator (the coordinator plugin's orchestration agent)
that sequences them. Each agent's task costs the price of its model tier, scaled by the
request's complexity::

    cost = sum over working agents of MODEL_COST[model] × COMPLEXITY_FACTOR[complexity]

The Appendix A request ("Build a FastAPI endpoint with MongoDB and Keycloak auth", moderate) has
three agents on opus — the coordinator, fastapi-backend's api designer, lobbi-platform-manager's
auth integrator — so it costs 3 × 0.10 × 1.5 = 0.45.

The decision stage alone does not know the agents yet: it assumes each phase runs on the model
its plugin's agents mostly use (:func:`usual_model`). The pipeline then picks the team and
states the cost of the agents it picked, in the team and in the decision alike, so the two never
disagree. A phase or coordinator for which no agent was found still costs one task on its
plugin's usual model: the plugin does the work all the same.
"""

from __future__ import annotations

from typing import Iterable

from arbiter.project.model import Plugin

MODEL_COST = {"opus": 0.10, "sonnet": 0.05, "haiku": 0.01}  # per agent task, in the seed's unit
COMPLEXITY_FACTOR = {"simple": 1.0, "moderate": 1.5, "complex": 2.5}
DEFAULT_MODEL = "sonnet"  # agents that name no model, and plugins without agents
DEFAULT_FACTOR = COMPLEXITY_FACTOR["moderate"]


def usual_model(plugin: Plugin | None) -> str:
    """The model most of a plugin's agents use (ties: the cheaper tier), else the default."""
    models = [a.model.lower() for a in plugin.agents if a.model] if plugin else []
    if not models:
        return DEFAULT_MODEL
    return max(sorted(set(models), key=lambda m: MODEL_COST.get(m, 0.0)), key=models.count)


def task_cost(model: str, complexity: str) -> float:
    """One agent's task on ``model`` for a request of this complexity."""
    price = MODEL_COST.get(model.lower(), MODEL_COST[DEFAULT_MODEL])
    return price * COMPLEXITY_FACTOR.get(complexity, DEFAULT_FACTOR)


def estimate(models: Iterable[str], complexity: str) -> float:
    """The cost of a request whose working agents run on ``models`` (one entry per agent)."""
    return round(sum(task_cost(m, complexity) for m in models), 4)


def working_plugins(phase_plugins: Iterable[str], coordinator: str) -> list[str]:
    """The plugin of every agent that works on a plan: the coordinator first when there is
    more than one phase, then one per phase."""
    phases = list(phase_plugins)
    return ([coordinator] if len(phases) > 1 else []) + phases
