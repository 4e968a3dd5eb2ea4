"""The ``arbiter`` command line.

Global options come before the subcommand and say which project to read; every subcommand
builds (or is handed) one snapshot and only reads it. Exit codes: 0 ok, 1 findings, 2 usage.

May import: any package of Arbiter. Nothing imports the command line.
"""

from __future__ import annotations

from pathlib import Path

import click

from arbiter import __version__

from .broker_commands import broker, events, status
from .chain_commands import chain
from .common import ArbiterGroup, Context, project_options
from .demo_command import demo
from .dlq_commands import dlq
from .dsl_commands import fmt, lint
from .keys_commands import keys
from .project_commands import agents, check_config, plugins
from .routing_commands import decisions, explain, route, test_cmd
from .sdk_commands import request, workers
from .state_commands import locks, log, state
from .store_commands import store


@click.group(cls=ArbiterGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
    \b
    Any other ecosystem, e.g. plain Claude Code plugins:
      arbiter --plugins-dir ../claude-plugins plugins list --json
    """
    ctx.obj = Context(root=root, plugin_dirs=list(plugin_dirs) or None)


main.add_command(plugins)
main.add_command(agents)
main.add_command(check_config)
main.add_command(lint)
main.add_command(fmt)
main.add_command(explain)
main.add_command(route)
main.add_command(test_cmd)
main.add_command(decisions)
for command in (demo, broker, workers, request, status, events, dlq):
    main.add_command(command)
main.add_command(store)
main.add_command(chain)
main.add_command(keys)
for command in (state, locks, log):
    main.add_command(command)
