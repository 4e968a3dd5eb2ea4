"""Commands that show and check a project: ``plugins``, ``agents``, ``check-config``."""

from __future__ import annotations

from typing import Any

import click

from arbiter.project.model import Component, Plugin, thaw
from arbiter.security.config import security_of
from arbiter.store import agents as agents_store
from arbiter.store import database as state

from .common import (
    Context,
    echo_json,
    json_option,
    pass_context,
    print_diagnostics,
    project_store,
    summarize_diagnostics,
    unknown_name,
)
from .tables import table

DESCRIPTION_WIDTH = 60


@click.group()
def plugins() -> None:
    """List and inspect the plugins of the project."""


@plugins.command("list")
@json_option
@pass_context
def plugins_list(ctx: Context, as_json: bool) -> None:
    """List plugins with their version and agent, command and skill counts."""
    snap = ctx.snapshot()
    summaries = [p.summary() for p in snap.plugins.values()]
    if as_json:
        echo_json(summaries)
    else:
        columns = ["NAME", "VERSION", "KIND", "AGENTS", "COMMANDS", "SKILLS", "DESCRIPTION"]
        rows = [[s[name.lower()] for name in columns] for s in summaries]
        counts = {"AGENTS", "COMMANDS", "SKILLS"}
        limits = {"DESCRIPTION": DESCRIPTION_WIDTH}
        click.echo("\n".join(table(columns, rows, numeric=counts, limits=limits, rule=True)))
        click.echo(f"\n{len(rows)} plugins")
    summarize_diagnostics(snap)


def _component_json(comp: Component) -> dict[str, Any]:
    return {
        "id": comp.id,
        "name": comp.name,
        "plugin": comp.plugin,
        "kind": comp.kind,
        "description": comp.description,
        "keywords": list(comp.keywords),
        "model": comp.model,
        "category": comp.category,
        "path": comp.path,
    }


def _plugin_json(plugin: Plugin) -> dict[str, Any]:
    caps, routing = plugin.capabilities, plugin.routing
    return {
        **plugin.summary(),
        "keywords": list(plugin.keywords),
        "capabilities": {k: list(getattr(caps, k)) for k in ("domains", "contexts", "patterns", "integrations")},
        "routing": {
            "priority": routing.priority,
            "keywords": list(routing.keywords),
            "contextPatterns": list(routing.context_patterns),
            "acceptsRoutingFrom": None if routing.accepts_routing_from is None else list(routing.accepts_routing_from),
            "canRouteTo": None if routing.can_route_to is None else list(routing.can_route_to),
        },
        "manifest": thaw(plugin.manifest),
        "agentList": [_component_json(c) for c in plugin.agents],
        "commandList": [_component_json(c) for c in plugin.commands],
        "skillList": [_component_json(c) for c in plugin.skills],
    }


@plugins.command("show")
@click.argument("name")
@json_option
@pass_context
def plugins_show(ctx: Context, name: str, as_json: bool) -> None:
    """Show one plugin: manifest essentials, agents, commands and skills."""
    snap = ctx.snapshot()
    plugin = snap.plugins.get(name)
    if plugin is None:
        raise unknown_name("plugin", name, snap.plugins)
    if as_json:
        echo_json(_plugin_json(plugin))
        return
    data = _plugin_json(plugin)
    click.echo(f"{plugin.name} {plugin.version}  ({plugin.kind}, {plugin.path})")
    if plugin.description:
        click.echo(f"  {plugin.description}")
    for key, values in data["capabilities"].items():
        if values:
            click.echo(f"  {key}: {', '.join(values)}")
    click.echo(f"  priority: {plugin.routing.priority}")
    sections = (("agents", plugin.agents), ("commands", plugin.commands), ("skills", plugin.skills))
    rows = [[c.name, c.description] for _, comps in sections for c in comps]
    lines = iter(table(["NAME", "DESCRIPTION"], rows, limits={"DESCRIPTION": 70}, header=False))
    for label, comps in sections:  # one table cut into sections, so all descriptions line up
        click.echo(f"\n{label} ({len(comps)}):")
        for _ in comps:
            click.echo(f"  {next(lines)}")


@click.group()
def agents() -> None:
    """List agents across the ecosystem."""


@agents.command("list")
@click.option("--plugin", "plugin_name", metavar="NAME", help="Only the agents of this plugin.")
@json_option
@pass_context
def agents_list(ctx: Context, plugin_name: str | None, as_json: bool) -> None:
    """List agents with their plugin, model and description, and what the broker learned of each
    plugin's work: its success rate and p50/p95 time over its recent tries, per command too."""
    snap = ctx.snapshot()
    if plugin_name and plugin_name not in snap.plugins:
        raise unknown_name("plugin", plugin_name, snap.plugins)
    found = snap.agents(plugin_name)
    learned = _learned(ctx, plugin_name)
    plugin_wide = {row["plugin"]: row for row in learned if row["name"] == agents_store.PLUGIN_ROW}
    if as_json:
        echo_json([dict(_component_json(a), learned=plugin_wide.get(a.plugin)) for a in found])
        return
    rows = [[a.plugin, a.name, a.model or "-", _rate(plugin_wide.get(a.plugin)), a.description] for a in found]
    columns = ["PLUGIN", "AGENT", "MODEL", "SUCCESS", "DESCRIPTION"]
    click.echo("\n".join(table(columns, rows, limits={"DESCRIPTION": DESCRIPTION_WIDTH}, rule=True)))
    click.echo(f"\n{len(rows)} agents")
    if learned:
        rows = [[r["plugin"], r["name"], r["calls"], _rate(r), r["p50Ms"], r["p95Ms"]] for r in learned]
        click.echo("\nLearned from the broker's dispatches (over the latest tries of each):")
        numeric = {"TRIES", "SUCCESS", "P50 MS", "P95 MS"}
        columns = ["PLUGIN", "COMMAND", "TRIES", "SUCCESS", "P50 MS", "P95 MS"]
        click.echo("\n".join(table(columns, rows, numeric=numeric, rule=True)))
    summarize_diagnostics(snap)


def _learned(ctx: Context, plugin: str | None) -> list[dict[str, Any]]:
    """The registry's rows; none when the store has none yet or cannot be read (the list of agents
    stands without them). A listing makes no store where there is none."""
    snap = ctx.snapshot()
    path = state.sqlite_path(snap.configs["state"]["database"], snap.project.root)
    if path is not None and not path.exists():
        return []
    try:
        with project_store(ctx):
            return agents_store.registry(plugin)
    except Exception as exc:
        click.echo(f"note: learned figures unavailable ({exc})", err=True)
        return []


def _rate(row: dict[str, Any] | None) -> str:
    return "-" if row is None or row["successRate"] is None else f"{row['successRate']:.0%}"


@click.command("check-config")
@json_option
@click.option("--quiet", "-q", is_flag=True, help="Only errors; no warnings.")
@pass_context
def check_config(ctx: Context, as_json: bool, quiet: bool) -> None:
    """Validate manifests, configs, rules and key files offline; exit 1 when anything is an error.

    Every problem is printed as path:line:col: severity[CODE]: message, warnings included
    (odd but readable files), so the whole project is checked in one run.
    """
    snap = ctx.snapshot()
    _, security_diags = security_of(snap)
    found = [*snap.diagnostics, *security_diags]
    errors = sum(d.severity == "error" for d in found)
    diags = [d for d in found if not quiet or d.severity == "error"]
    if as_json:
        echo_json(
            {
                "ok": not errors,
                "plugins": len(snap.plugins),
                "rules": len(snap.rules.ruleset.rules),
                "diagnostics": [d.to_json() for d in diags],
            }
        )
    else:
        print_diagnostics(diags)
        status = "FAILED" if errors else "ok"
        click.echo(
            f"{snap.project.root}: {len(snap.plugins)} plugins, {len(snap.rules.ruleset.rules)} rules, "
            f"{errors} error(s), {len(found) - errors} warning(s): configuration {status}"
        )
    raise SystemExit(1 if errors else 0)
