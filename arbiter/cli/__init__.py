"""The ``arbiter`` command line.

Global options come before the subcommand and say which project to read; every subcommand
builds (or is handed) one snapshot and only reads it. Exit codes: 0 ok, 1 findings, 2 usage.

May import: any package of Arbiter. Nothing imports the command line.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import click

from arbiter import __version__

from .common import ArbiterGroup, Context, project_options

# Each subcommand by name: "module:attribute" under arbiter.cli. A command's module is imported
# when the command runs (or --help lists it), so `arbiter explain` pays only for what it uses.
SUBCOMMANDS = {
    "plugins": "project_commands:plugins",
    "agents": "project_commands:agents",
    "check-config": "project_commands:check_config",
    "lint": "dsl_commands:lint",
    "fmt": "dsl_commands:fmt",
    "explain": "routing_commands:explain",
    "route": "routing_commands:route",
    "test": "routing_commands:test_cmd",
    "decisions": "routing_commands:decisions",
    "demo": "demo_command:demo",
    "broker": "broker_commands:broker",
    "workers": "sdk_commands:workers",
    "request": "sdk_commands:request",
    "status": "broker_commands:status",
    "events": "broker_commands:events",
    "dashboard": "dashboard_commands:dashboard",
    "dlq": "dlq_commands:dlq",
    "store": "store_commands:store",
    "chain": "chain_commands:chain",
    "keys": "keys_commands:keys",
    "state": "state_commands:state",
    "locks": "state_commands:locks",
    "log": "state_commands:log",
}


class LazyGroup(ArbiterGroup):
    """The ``arbiter`` group, loading a subcommand's module only when that subcommand is wanted."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*SUBCOMMANDS, *(name for name in super().list_commands(ctx) if name not in SUBCOMMANDS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in SUBCOMMANDS:
            return command
        module, attribute = SUBCOMMANDS[cmd_name].split(":")
        command = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
        self.add_command(command, cmd_name)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="arbiter")
@project_options
@click.pass_context
def main(ctx: click.Context, root: Path, plugin_dirs: tuple[Path, ...]) -> None:
    """Arbiter routes requests across a plugin ecosystem and explains why.

    \b
    Look at a project:
      arbiter plugins list                 the plugins, with agent/command/skill counts
      arbiter plugins show NAME            one plugin's manifest, agents and commands
      arbiter agents list --plugin NAME    agents across the ecosystem
      arbiter check-config                 validate everything offline (like nginx -t)
    \b
    Work on rules (rules/*.arb):
      arbiter lint                         errors with file:line:col, a caret and a hint
      arbiter fmt [--check]                canonical layout, comments kept
    \b
    Route requests:
      arbiter explain "TEXT" [--file P]... [--why-not PLUGIN] [--json]
      arbiter route "TEXT" | arbiter route --input requests.jsonl
      arbiter test                         run the routing cases in rules/*.test.yaml
      arbiter decisions --last 10          recorded decisions
    \b
    Run and talk to the broker (MDP/0.1 over ZeroMQ):
      arbiter demo                         broker + workers + routed requests, end to end
      arbiter broker                       the daemon; SIGHUP or a saved file reloads
      arbiter workers                      demo workers for the shipped plugins
      arbiter request arbiter.route '{"text": "deploy the tenant"}'
      arbiter status | arbiter events [TOPIC]... | arbiter dlq list
      arbiter store check                  is the state database sound?
      arbiter keys new NAME | keys list    CURVE key pairs for configs/security.yaml
      arbiter chain run NAME --param K=V   run a chain of rules/*.arb; chain list|show|status|runs
      arbiter state get|put|cas|incr|list  shared context through the broker; locks list; log
      arbiter dashboard [--port P]         a live page: services, decisions, chains, dead letters
      arbiter broker --metrics HOST:PORT   Prometheus metrics on /metrics (docs/METRICS.md)
    \b
    Any other ecosystem, e.g. plain Claude Code plugins:
      arbiter --plugins-dir ../claude-plugins plugins list --json
    """
    ctx.obj = Context(root=root, plugin_dirs=list(plugin_dirs) or None)
