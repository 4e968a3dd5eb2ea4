"""``explain``, ``route``, ``test`` and ``decisions``: asking the router and checking its answers."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, TextIO

import click

from arbiter.dsl.durations import parse_ms
from arbiter.routing.case_checks import Known
from arbiter.routing.case_runs import case_health, run_cases, selects, uncovered
from arbiter.routing.cases import Case, load_cases
from arbiter.routing.explain import render, render_recorded
from arbiter.routing.match import Health, health_of
from arbiter.routing.pipeline import Request, Router, RoutingResult
from arbiter.store import agents, retention
from arbiter.store import database as state
from arbiter.store import decisions as record
from arbiter.store.recorder import Recorder

from .case_report import echo_coverage, echo_outcomes, report_json
from .common import (
    Context,
    duration_value,
    echo_json,
    json_option,
    pass_context,
    print_diagnostics,
    unknown_name,
)
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
    if why_not and why_not not in router.snapshot.plugins:
        raise unknown_name("plugin", why_not, router.snapshot.plugins)
    circuits, health = _circuit_health(ctx)
    result = router.route(Request(text, files, caller), health)
    data = result.to_json()
    data["circuits"] = circuits
    data["whyNot"] = {"plugin": why_not, "reasons": router.why_not(result, why_not)} if why_not else None
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
        request = _batch_request(line, number)
        if isinstance(request, str):
            failures += 1
            click.echo(f"{getattr(stream, 'name', '-')}:{number}: {request}", err=True)
            click.echo(json.dumps({"line": number, "error": f"invalid request: {request}"}))
            continue
        data = router.route(request, health).to_json(trace=False)
        if writer:
            writer.submit_decision(data, origin="cli")
            writer.flush_if_due()
        click.echo(json.dumps(data, default=str))
    if writer:
        writer.close()
    return failures


def _batch_request(line: str, number: int) -> Request | str:
    """One line of a batch as a request, or what is wrong with it: a JSON object whose `text` is
    a non-empty string, `files` (optional) a list of strings, `from` (optional) a string."""
    try:
        item = json.loads(line)
    except ValueError as exc:
        return f"not JSON ({exc})"
    if not isinstance(item, dict):
        return 'a line is a JSON object: {"text": "...", "files": [...], "id": "..."}'
    text, files, caller = item.get("text"), item.get("files", []), item.get("from")
    if not isinstance(text, str) or not text.strip():
        return "`text` is required and must be a non-empty string"
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return "`files` must be a list of strings"
    if caller is not None and not isinstance(caller, str):
        return "`from` must be a plugin name (a string)"
    return Request(text, tuple(files), caller, str(item.get("id", number)))


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
    `explain --json` shape without the trace, with requestId set to the input's id. A bad line
    (not JSON, `text` missing or empty, `files` not a list of strings) gets an error line on
    stdout and `FILE:LINE: what is wrong` on stderr; the other lines are routed, and the exit
    status is 1 at the end.
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
@click.option(
    "-k",
    "pattern",
    metavar="PATTERN",
    help="Run only the cases whose name or text contains PATTERN (case-insensitive; words combine "
    "with and/or/not, as pytest -k).",
)
@click.option("--coverage", is_flag=True, help="Also list the rules no case fires, with file:line.")
@pass_context
def test_cmd(
    ctx: Context, paths: tuple[Path, ...], as_json: bool, verbose: bool, pattern: str | None, coverage: bool
) -> None:
    """Run routing test cases, like `opa test`: each case routes a request under the conditions it
    sets and checks what the decision shows.

    \b
    A case (rules/*.test.yaml; every key in dsl/REFERENCE.md, "Routing test cases"):
      - text: Build a FastAPI endpoint with Keycloak auth
        from: jira-orchestrator            the calling plugin     (also: files)
        unserved: [home-assistant]         no live worker serves it
        circuits: {exec-automator: open}   closed | open | half-open
        expect: fastapi-backend            or `none` / no_route: true
        fired: [keycloak-auth-goes-to-platform]     not_fired: [...]
        collaborators: [lobbi-platform-manager]     excluded: [...]
        strategy: sequential_collaboration          fallbacks: {includes: [...]}
    \b
    Examples:
      arbiter test                         every *.test.yaml in ROOT/rules
      arbiter test -k keycloak -v          only the cases that mention keycloak
      arbiter test --coverage              and the rules no case fires
    \b
    A failing case prints each failed assertion and the explain that made the decision (facts,
    rules fired, best scores). Case files are checked first, as lint checks rules: unknown keys,
    plugins or rules and wrong types are errors at file:line:col.
    Exit status: 0 all cases pass, 1 a case failed, 2 a case file is broken (nothing runs).
    """
    snap = ctx.snapshot()
    known = Known(frozenset(snap.plugins), frozenset(r.name for r in snap.rules.ruleset.rules))
    cases, problems = load_cases(list(paths) or [ctx.root / "rules"], known)
    if problems:
        print_diagnostics(problems)
        click.echo(f"{len(problems)} problem(s) in the case files; no case was run", err=True)
        raise SystemExit(2)
    try:
        keep = selects(pattern) if pattern else None
    except SyntaxError:
        raise click.BadParameter(f"cannot read {pattern!r}: use words with and, or, not", param_hint="-k") from None
    selected = [c for c in cases if keep is None or keep(c)]
    router = _router(ctx)
    circuits, health = _circuit_health(ctx)

    def run(case: Case) -> RoutingResult:
        return router.route(Request(case.text, case.files, case.caller), case_health(case, health))

    outcomes = run_cases(selected, run)
    missed = uncovered(snap.rules.ruleset.rules, outcomes) if coverage else None
    failed = [o for o in outcomes if not o.passed]
    if as_json:
        echo_json(report_json(outcomes, circuits, missed, len(selected), len(cases)))
        raise SystemExit(1 if failed else 0)
    for line in _circuit_lines(circuits):
        click.echo(f"note: {line} (its plugin is not eligible, as in the broker)", err=True)
    echo_outcomes(outcomes, verbose)
    deselected = f" ({len(cases) - len(selected)} deselected by -k)" if pattern else ""
    click.echo(f"{len(outcomes) - len(failed)}/{len(outcomes)} passed{deselected}")
    if missed is not None:
        echo_coverage(missed, len(snap.rules.ruleset.rules))
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
