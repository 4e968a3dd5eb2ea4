"""``explain``, ``route``, ``test`` and ``decisions``: asking the router and checking its answers."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any, TextIO

import click

from arbiter.dsl.durations import parse_ms
from arbiter.routing.cases import load_cases, run_cases
from arbiter.routing.explain import render, render_recorded
from arbiter.routing.match import Health, health_of
from arbiter.routing.pipeline import Request, Router
from arbiter.store import agents, retention
from arbiter.store import database as state
from arbiter.store import decisions as record
from arbiter.store.recorder import Recorder

from .common import Context, duration_value, echo_json, json_option, pass_context, print_diagnostics
from .tables import ELLIPSIS, GAP, printable, printable_fields, table, truncate, width

file_option = click.option(
    "--file", "files", multiple=True, metavar="PATH", help="A file the request is about (repeatable)."
)
from_option = click.option("--from", "caller", metavar="PLUGIN", help="The plugin the request comes from.")
record_option = click.option(
    "--record/--no-record", "record_", default=True, show_default=True, help="Store the decision in the state database."
)


def _router(ctx: Context) -> Router:
    snap = ctx.snapshot()
    if snap.errors:
        print_diagnostics(snap.errors)
        raise click.ClickException("the project has errors (see above); fix them or run `arbiter check-config`")
    return Router(snap)


def _open_store(ctx: Context) -> None:
    snap = ctx.snapshot()
    state.open_store(snap.configs["state"]["database"], snap.project.root)


@click.command()
@click.argument("text", required=False)
@file_option
@from_option
@json_option
@click.option("--why-not", "why_not", metavar="PLUGIN", help="Explain what kept PLUGIN from winning.")
@click.option(
    "--request", "request_id", metavar="ID", help="Show a recorded decision and how the broker dispatched it."
)
@record_option
@pass_context
def explain(
    ctx: Context,
    text: str | None,
    files: tuple[str, ...],
    caller: str | None,
    as_json: bool,
    why_not: str | None,
    request_id: str | None,
    record_: bool,
) -> None:
    """Route TEXT and show why: facts with evidence, rules fired (file:line and reason), every
    plugin's score with what matched, the decision and the agent team.

    \b
    Example:
      arbiter explain "Build a FastAPI endpoint with MongoDB and Keycloak auth"
      arbiter explain "deploy to prod" --file k8s/app.yaml --why-not home-assistant --json
      arbiter explain --request req_1a2b3c4d5e6f     a recorded decision and its dispatch steps
    \b
    Circuit states the broker recorded (an open circuit makes a plugin ineligible) are applied
    and listed at the end.
    """
    if request_id:
        _explain_recorded(ctx, request_id, as_json)
        return
    if not text:
        raise click.UsageError("give the TEXT to route, or --request ID for a recorded decision")
    router = _router(ctx)
    circuits, health = _circuit_health(ctx)
    result = router.route(Request(text, files, caller), health)
    data = result.to_json()
    data["circuits"] = circuits
    if why_not:
        data["whyNot"] = {"plugin": why_not, "reasons": router.why_not(result, why_not)}
    if record_:
        record.record_decision(data, origin="cli")
    if as_json:
        echo_json(data)
        return
    click.echo(render(result), nl=False)
    for line in _circuit_lines(circuits):
        click.echo(f"\n{line}")
    if why_not:
        click.echo(f"\nWhy not {why_not}")
        for line in data["whyNot"]["reasons"]:
            click.echo(f"  - {line}")


def _explain_recorded(ctx: Context, request_id: str, as_json: bool) -> None:
    _open_store(ctx)
    found = record.find_decision(request_id)
    if found is None:
        click.echo(f"error: no recorded decision for request '{request_id}' (see `arbiter decisions`)", err=True)
        raise SystemExit(1)
    if as_json:
        echo_json(found)
    else:
        shown = dict(found, userInput=record.shown_input(found))  # a cut request says so, with its length and hash
        click.echo(render_recorded(printable_fields(shown)), nl=False)
        if found.get("traceId"):
            click.echo(f"Trace: {printable(str(found['traceId']))}")


def _saved_health(ctx: Context) -> tuple[dict[str, dict], dict[str, float]]:
    """Circuits the broker last recorded as not closed, and the success rates the registry
    learned; explain shows the plugins as the broker would. A store that cannot be opened or read
    is the command's error (one line, exit 1), as for every command: routing on without them
    would answer unlike the broker."""
    try:
        _open_store(ctx)
        return record.saved_circuits(), agents.plugin_rates()
    except Exception as exc:  # what the store holds but cannot be read: route without it
        if state.store_failure(exc) is not None:
            raise
        click.echo(f"note: circuit states and learned success rates unavailable ({exc})", err=True)
        return {}, {}


def _circuit_health(ctx: Context) -> tuple[dict[str, dict], dict[str, Health]]:
    """The circuits the broker last recorded as not closed, and the plugin health they and the
    learned success rates mean: explain, route and test all route with it, so they give one
    answer, the broker's."""
    circuits, rates = _saved_health(ctx)
    return circuits, health_of({name: info["circuit"] for name, info in circuits.items()}, rates)


def _circuit_lines(circuits: dict[str, dict]) -> list[str]:
    return [
        f"Circuit of {name} is {info['circuit']} since {info['at']}: {info['reason']}"
        for name, info in sorted(circuits.items())
    ]


def _decision_recorder(ctx: Context) -> Recorder:
    """A recorder process for many decisions, as the broker has: the rows are written in batches
    on another interpreter while this one routes."""
    snap = ctx.snapshot()
    return Recorder(snap.configs["state"]["database"], snap.project.root)


def _batch(router: Router, stream: TextIO, writer: Recorder | None, health: dict[str, Health]) -> int:
    """JSON lines in, JSON lines out, in order; a bad line gets an error line, not an abort."""
    failures = 0
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            request = Request(
                str(item["text"]), tuple(item.get("files") or ()), item.get("from"), str(item.get("id", number))
            )
        except (ValueError, KeyError, TypeError) as exc:
            failures += 1
            click.echo(json.dumps({"line": number, "error": f"invalid request: {exc}"}))
            continue
        data = router.route(request, health).to_json(trace=False)
        if writer:
            writer.submit_decision(data, origin="cli")
            writer.flush_if_due()
        click.echo(json.dumps(data, default=str))
    if writer:
        writer.close()
    return failures


@click.command()
@click.argument("text", required=False)
@file_option
@from_option
@click.option("--input", "input_", type=click.File("r"), help="JSON lines {id, text, files} ('-' for stdin).")
@json_option
@record_option
@pass_context
def route(
    ctx: Context,
    text: str | None,
    files: tuple[str, ...],
    caller: str | None,
    input_: TextIO | None,
    as_json: bool,
    record_: bool,
) -> None:
    """Print the routing decision for TEXT, or for every request of a JSON-lines file.

    Batch mode loads the project once and writes one JSON line per request, in order, in the
    `explain --json` shape without the trace, with requestId set to the input's id.
    """
    if (text is None) == (input_ is None):
        raise click.UsageError("give either TEXT or --input FILE")
    router = _router(ctx)
    circuits, health = _circuit_health(ctx)
    if record_:
        _open_store(ctx)
    if input_ is not None:
        for line in _circuit_lines(circuits):
            click.echo(f"note: {line}", err=True)
        raise SystemExit(1 if _batch(router, input_, _decision_recorder(ctx) if record_ else None, health) else 0)
    data = router.route(Request(text or "", files, caller), health).to_json(trace=False)
    data["circuits"] = circuits
    if record_:
        record.record_decision(data, origin="cli")
    if as_json:
        echo_json(data)
        return
    decision = data["routingDecision"]
    if decision["primaryPlugin"] is None:
        click.echo(f"no route (nearest: {', '.join(decision.get('nearestCandidates', [])) or 'none'})")
        for line in _circuit_lines(circuits):
            click.echo(line)
        return
    plan = decision["collaborationPlan"]
    click.echo(f"primary: {decision['primaryPlugin']}")
    click.echo(f"fallbacks: {', '.join(decision['fallbackPlugins']) or '-'}")
    if plan:
        steps = " -> ".join(f"{p['plugin']} ({p['domain']})" for p in plan["phases"])
        click.echo(f"plan: {steps}")
    click.echo(f"strategy: {decision['executionStrategy']}")
    for line in _circuit_lines(circuits):
        click.echo(line)


@click.command("test")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@json_option
@click.option("--verbose", "-v", is_flag=True, help="List passing cases too.")
@pass_context
def test_cmd(ctx: Context, paths: tuple[Path, ...], as_json: bool, verbose: bool) -> None:
    """Run routing test cases (YAML: text, files, expect, also, collaborators), like `opa test`.

    Default PATHS: every *.test.yaml in ROOT/rules. Exit 1 when any case fails.
    """
    cases, problems = load_cases(list(paths) or [ctx.root / "rules"])
    if problems:
        print_diagnostics(problems)
        raise SystemExit(1)
    router = _router(ctx)
    circuits, health = _circuit_health(ctx)

    def run(case: Any) -> tuple[str | None, tuple[str, ...]]:
        result = router.route(Request(case.text, case.files, case.caller), health)
        return result.decision.primary_plugin, result.collaborators()

    outcomes = run_cases(cases, run)
    failed = [o for o in outcomes if not o.passed]
    if as_json:
        echo_json(
            {
                "passed": len(outcomes) - len(failed),
                "failed": len(failed),
                "circuits": circuits,
                "cases": [
                    {
                        "name": o.case.name,
                        "file": f"{o.case.path}:{o.case.line}",
                        "passed": o.passed,
                        "expected": o.case.expect,
                        "got": o.primary,
                        "message": o.message,
                    }
                    for o in outcomes
                ],
            }
        )
    else:
        for line in _circuit_lines(circuits):
            click.echo(f"note: {line} (its plugin is not eligible, as in the broker)", err=True)
        for o in outcomes:
            if o.passed and not verbose:
                continue
            mark = "PASS" if o.passed else "FAIL"
            click.echo(f"{mark}  {o.case.path}:{o.case.line}  {o.case.name[:60]}")
            if o.message:
                click.echo(f"      {o.message}")
        click.echo(f"{len(outcomes) - len(failed)}/{len(outcomes)} passed", file=sys.stdout)
    raise SystemExit(1 if failed else 0)


@click.group(invoke_without_command=True)
@click.option("--last", "last", default=20, show_default=True, help="How many of the newest decisions.")
@json_option
@pass_context
def decisions(ctx: Context, last: int, as_json: bool) -> None:
    """List recorded routing decisions, newest first (from route, explain and the broker).

    \b
      arbiter decisions --last 10
      arbiter decisions prune --older-than 30d --dry-run
    """
    if click.get_current_context().invoked_subcommand is not None:
        return
    _open_store(ctx)
    rows = record.recent_decisions(last)
    if as_json:
        echo_json(rows)
        return
    for line in _decision_lines(rows):
        click.echo(line)
    if not rows:
        click.echo("no decisions recorded yet")


def _decision_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One table line per decision, each followed by the dispatch steps the broker took for it."""
    cells = []
    for row in rows:
        took = (row["timings"] or {}).get("totalUs")
        took_text = f"{took / 1000:.2f} ms" if took else "-"
        primary = row["primaryPlugin"] or "no route"
        cells.append([row["createdAt"], row["requestId"], primary, took_text, row["origin"], _input_cell(row)])
    columns = ["AT", "REQUEST", "PRIMARY", "TOOK", "ORIGIN", "INPUT"]
    lines = table(columns, cells, numeric={"TOOK"}, header=False)
    indent = " " * (max((width(printable(c[0])) for c in cells), default=0) + len(GAP))
    out = []
    for row, line in zip(rows, lines):
        out.append(line)
        for step in (row["outcome"] or {}).get("steps") or ():
            detail = f" ({step['detail']})" if step.get("detail") else ""
            text = f"-> {step['plugin']} {step.get('command') or ''}: {step['outcome']}{detail}"
            out.append(indent + printable(text))
    return out


INPUT_WIDTH = 50  # columns of request text in the decisions table
CUT_INPUT_WIDTH = 20  # of a request stored cut, followed by its length and the head of its hash


def _input_cell(row: dict[str, Any]) -> str:
    """The table's INPUT cell: the text's head; a request stored cut also shows its length and
    hash, which a plain cut to the column's width would hide."""
    text, cut = printable(row["userInput"] or ""), record.stored_input(row)
    if cut is None:
        return truncate(text, INPUT_WIDTH)
    return truncate(text, CUT_INPUT_WIDTH).removesuffix(ELLIPSIS) + cut.note(digits=12)


@decisions.command("prune")
@click.option(
    "--older-than",
    "older_than",
    metavar="DURATION",
    callback=duration_value,
    help="Delete decisions older than this, e.g. 30d.",
)
@click.option("--keep", type=click.IntRange(min=0), metavar="N", help="Delete all but the newest N decisions.")
@click.option("--dry-run", "dry_run", is_flag=True, help="Only count what would be deleted.")
@json_option
@pass_context
def prune_cmd(ctx: Context, older_than: dt.timedelta | None, keep: int | None, dry_run: bool, as_json: bool) -> None:
    """Delete old routing decisions, oldest first: those older than --older-than and all but the
    newest --keep. Without either, the retention of configs/state.yaml, which the broker also
    applies by itself, a bounded number of rows at a time.

    \b
      arbiter decisions prune                      the configured retention, now
      arbiter decisions prune --keep 100000 --dry-run
    """
    if older_than is None and keep is None:
        configured = retention.Retention.of(ctx.snapshot().configs["state"]["retention"], parse_ms)
        older_than, keep = configured.max_age, configured.max_rows
        if older_than is None and keep is None:
            raise click.UsageError("configs/state.yaml sets no retention; give --older-than DURATION or --keep N")
    _open_store(ctx)
    count = retention.prune(older_than, keep, dry_run=dry_run)
    if as_json:
        echo_json({"pruned": count, "dryRun": dry_run})
    else:
        click.echo(f"{'would prune' if dry_run else 'pruned'} {count} decision(s)")
