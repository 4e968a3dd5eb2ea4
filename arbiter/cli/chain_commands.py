"""``arbiter chain``: the chains of ``rules/*.arb``, and their runs.

``list`` and ``show`` read the project (a plan as a tree or a Mermaid flowchart, to review a chain
before it runs); ``run``, ``resume`` and ``cancel`` ask the broker's ``arbiter.chain`` service,
which runs chains and keeps their state; ``status`` and ``runs`` read that state back from the
store, so a run can be looked at whether or not the broker is up. Run ids may be shortened to any
unique prefix, as with git. Exit codes: 0 ok, 1 a run that did not complete, an unknown run or an
error from the broker, 2 usage.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Mapping, Sequence

import click

from arbiter.dsl import chains
from arbiter.orchestration.runner import COMPENSATION_TRIES
from arbiter.sdk.client import Client, Reply, RequestTimeout
from arbiter.store import database as state
from arbiter.store import runs
from arbiter.wire import envelope as env

from .chain_views import (
    DONE_STEP,
    ENDED,
    _short_time,
    _step_label,
    duration_text,
    ended_badly,
    kind_text,
    mermaid,
    outcome_lines,
    params_text,
    plan_json,
    run_lines,
    status_lines,
    steps_to_take,
    stored_run,
    took_ms,
    tree_lines,
    where,
)
from .common import (
    Context,
    echo_json,
    endpoint_option,
    json_option,
    pass_context,
    project_store,
    summarize_diagnostics,
    unknown_name,
)
from .sdk_commands import broker_frontends
from .tables import printable, table

SERVICE = "arbiter.chain"
REPLY_WAIT_S = 5.0  # a reply that comes at once: --no-wait, resume, cancel
DEFAULT_WAIT_S = 300.0  # a waited run of a chain this project does not know
FOLLOW_TIMEOUT_S = 300.0
WAIT_MARGIN_S = 30.0  # beyond a chain's own bound: the broker's dispatch, fallbacks, a busy queue
FOLLOW_POLL_S = 0.5


def _param_values(ctx: click.Context, param: click.Parameter, pairs: Sequence[str]) -> dict[str, Any]:
    """``K=V`` pairs: V as JSON when it parses (``5``, ``true``, ``["a"]``, ``"5"``), else as text."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not K=V (e.g. --param issueKey=ABC-1)", ctx, param)
        if key in values:
            raise click.BadParameter(f"{key} is given twice", ctx, param)
        try:
            values[key] = json.loads(text)
        except ValueError:
            values[key] = text
    return values


def wait_budget_s(ctx: Context, chain: str | None) -> float:
    """How long a run may take: the chain's timeout, else its steps one after another with every
    try; a saga may then undo each step; plus a margin for the broker. A chain this project does
    not know (the broker may read another) gets a fixed wait."""
    plan = ctx.snapshot().rules.chains.get(chain) if chain else None
    if plan is None:
        return DEFAULT_WAIT_S
    steps = chains.steps(plan.items)
    forward = plan.timeout_ms or sum(step.timeout_ms * (step.retry + 1) for step in steps)
    undo = sum(step.timeout_ms * COMPENSATION_TRIES for step in steps if step.compensate) if plan.kind == "saga" else 0
    return (forward + undo) / 1000 + WAIT_MARGIN_S


def ask(ctx: Context, endpoint: str | None, payload: dict[str, Any], wait_s: float, retries: int = 0) -> Reply | None:
    """One request to ``arbiter.chain``; None when nothing answered. Starting or resuming a run
    is not retried on one broker: a second attempt could run it twice. With several brokers the
    next one is asked when one does not answer (docs/DEPLOYMENT.md)."""
    urls = broker_frontends(ctx, endpoint)  # several brokers: one more attempt per broker, the same messageId
    retries = max(retries, len(urls) - 1)
    request = env.new_request(SERVICE, "", None, source="arbiter-cli", timeout_ms=int(wait_s * 1000 * (retries + 1)))
    request["payload"] = payload
    with Client(urls, timeout=wait_s, retries=retries, source="arbiter-cli") as client:
        try:
            return client.request(SERVICE, request)
        except RequestTimeout as exc:
            click.echo(f"error: {printable(exc)}", err=True)
            return None


def answer(reply: Reply | None, as_json: bool, hint: str = "") -> Any:
    """The reply's result. An error reply, or none, is printed (as JSON with --json) and ends the
    command with exit 1; ``hint`` says what to do when nothing answered."""
    if reply is not None and reply.envelope is not None and reply.ok:
        return reply.result
    if reply is None:
        error = {"code": "NO_REPLY", "message": f"no reply from {SERVICE}"}
        if hint:
            click.echo(f"note: {printable(hint)}", err=True)
    else:
        error = reply.error or {"code": "BAD_REPLY", "message": f"not an envelope: {reply.text()[:200]}"}
        if not as_json:
            click.echo(printable(f"error: {error.get('code')}: {error.get('message')}"), err=True)
    if as_json:
        echo_json({"error": error})
    sys.exit(1)


def print_run(run: Any, as_json: bool) -> None:
    if as_json:
        echo_json(run)
    elif isinstance(run, Mapping):
        click.echo("\n".join(run_lines(run)))
    else:
        click.echo(printable(run))


def resolve_run(ctx: Context, run_id: str) -> tuple[str, str | None]:
    """A run id completed from the store as ``status`` completes it, with its chain; an id the
    store does not know (or cannot be read for) goes to the broker as given."""
    try:
        with project_store(ctx):
            row = runs.get(run_id)
        return row["id"], row["name"]
    except runs.RunNotFound:
        return run_id, None
    except Exception as exc:
        if state.store_failure(exc) is None:
            raise
        return run_id, None


# -- the store ------------------------------------------------------------------------------------


def _find_run(run_id: str) -> dict[str, Any]:
    try:
        return stored_run(runs.get(run_id))
    except runs.RunNotFound as exc:
        click.echo(f"error: {printable(exc)}", err=True)
        sys.exit(1)


def _clock(iso: str | None) -> str:
    return iso[11:19] if iso and len(iso) >= 19 else time.strftime("%H:%M:%S", time.gmtime())


def change_lines(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What changed between two readings of a run: one line per step that moved, then the run."""
    marks = {(s["name"], s["what"]): (s["status"], s["tries"], s["error"]) for s in old["steps"]}
    lines = []
    for step in new["steps"]:
        if marks.get((step["name"], step["what"])) != (step["status"], step["tries"], step["error"]):
            details = [f"{step['tries']} tr{'y' if step['tries'] == 1 else 'ies'}"] if step["tries"] else []
            details += [duration_text(step["ms"])] if step["ms"] else []
            text = f"{_step_label(step)}: {step['status']}" + (f" ({', '.join(details)})" if details else "")
            lines.append(f"{_clock(step['updatedAt'])}  {text}" + (f": {step['error']}" if step["error"] else ""))
    if old["status"] != new["status"]:
        lines.append(f"{_clock(new['updatedAt'])}  run: {new['status']}")
    return [printable(line) for line in lines]


def follow(run: dict[str, Any], timeout_s: float, echo: bool) -> dict[str, Any]:
    """Poll the store until the run ends or ``timeout_s`` passes; print each change as it comes."""
    deadline = time.monotonic() + timeout_s
    while run["status"] not in ENDED and time.monotonic() < deadline:
        time.sleep(FOLLOW_POLL_S)
        newer = _find_run(run["runId"])
        for line in change_lines(run, newer) if echo else ():
            click.echo(line)
        run = newer
    return run


# -- the commands ---------------------------------------------------------------------------------


@click.group("chain")
def chain() -> None:
    """Chains: multi-step workflows over plugin commands, declared in rules/*.arb.

    \b
    Look at them (the project's files):
      arbiter chain list                       name, kind, parameters, steps, file:line
      arbiter chain show jira-delivery         the steps as a tree
      arbiter chain show tenant-onboarding --mermaid > saga.mmd
    \b
    Run them (through the broker's arbiter.chain service):
      arbiter chain run jira-delivery --param issueKey=ABC-123
      arbiter chain run environment-deployment --param environment=production --no-wait
      arbiter chain resume RUN_ID   |   arbiter chain cancel RUN_ID
    \b
    Follow them (the state store; the broker need not be up):
      arbiter chain runs --last 10 --chain jira-delivery
      arbiter chain status RUN_ID --follow    (RUN_ID as `chain runs` lists it, or a unique prefix)
    \b
    dsl/REFERENCE.md ("Chains") has the language and what each kind does when a step fails.
    """


@chain.command("list", short_help="The chains of rules/*.arb: kind, parameters, steps.")
@json_option
@pass_context
def list_cmd(ctx: Context, as_json: bool) -> None:
    """List every chain: kind (a parallel one with its on-failure policy), parameters with their
    defaults, how many steps it declares (both sides of an if/else count) and where it is written.

    \b
      arbiter chain list
      arbiter chain list --json | jq -r '.[].name'
    """
    snap = ctx.snapshot()
    plans = list(snap.rules.chains.values())
    if as_json:
        echo_json([plan_json(plan, items=False) for plan in plans])
    elif not plans:
        click.echo("no chains (declare them in rules/*.arb; see dsl/REFERENCE.md)")
    else:
        rows = [
            [p.name, kind_text(p), params_text(p) or None, len(chains.steps(p.items)), where(p.source)] for p in plans
        ]
        click.echo("\n".join(table(["NAME", "KIND", "PARAMETERS", "STEPS", "SOURCE"], rows, numeric={"STEPS"})))
    summarize_diagnostics(snap)


@chain.command("show", short_help="A chain's steps as a tree, or a Mermaid flowchart.")
@click.argument("name")
@click.option(
    "--mermaid", "as_mermaid", is_flag=True, help="Print a Mermaid flowchart (flowchart TD) instead of the tree."
)
@json_option
@pass_context
def show(ctx: Context, name: str, as_mermaid: bool, as_json: bool) -> None:
    """Show chain NAME's steps as a tree: plugin and command, the arguments (with $parameters and
    step.field references to earlier results), when, timeout, retry, compensation, if/else.

    \b
    --mermaid draws it: one node per step in execution order, a diamond per if/else, a parallel
    chain fanning out from its start and joining, a saga's compensations as dashed edges back
    (paste into any Markdown that renders Mermaid, or https://mermaid.live).
    \b
      arbiter chain show environment-deployment
      arbiter chain show tenant-onboarding --mermaid
      arbiter chain show jira-delivery --json
    """
    if as_mermaid and as_json:
        raise click.UsageError("give --mermaid or --json, not both")
    plans = ctx.snapshot().rules.chains
    if name not in plans:
        raise unknown_name("chain", name, plans)
    plan = plans[name]
    if as_json:
        echo_json(plan_json(plan))
    elif as_mermaid:
        click.echo(mermaid(plan))
    else:
        click.echo("\n".join(printable(line) for line in tree_lines(plan)))


@chain.command("run", short_help="Run a chain through the broker.")
@click.argument("name")
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="K=V",
    callback=_param_values,
    help="A chain parameter (repeatable). V is read as JSON when it parses (5, true, [1, 2], '\"5\"'), "
    "else as a string.",
)
@click.option("--no-wait", is_flag=True, help="Print the run id as soon as the run starts.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="S",
    help="Seconds to wait for the reply. Default: what the chain may take (its timeout, else its steps' "
    f"timeouts with every try) plus {WAIT_MARGIN_S:g}s; {REPLY_WAIT_S:g}s with --no-wait.",
)
@endpoint_option
@json_option
@pass_context
def run_cmd(
    ctx: Context,
    name: str,
    params: dict[str, Any],
    no_wait: bool,
    timeout: float | None,
    endpoint: str | None,
    as_json: bool,
) -> None:
    """Run chain NAME through the broker and print the run: each step's status, plugin, command,
    tries and time, then the result or the error.

    \b
    Exit 0 when the run completed; 1 when it failed, was cancelled, timed out or was compensated,
    when the broker answered an error (UNKNOWN_CHAIN, BAD_PARAMETERS, ...) or nothing answered in
    time (the run may still be going: `arbiter chain runs`); 2 for a bad --param.
    \b
      arbiter chain run jira-delivery --param issueKey=ABC-123
      arbiter chain run tenant-onboarding --param tenantId=acme --json
      arbiter chain run multi-plugin-analysis --no-wait
    """
    wait_s = timeout or (REPLY_WAIT_S if no_wait else wait_budget_s(ctx, name))
    reply = ask(ctx, endpoint, {"chain": name, "params": params, "wait": not no_wait}, wait_s)
    hint = "" if no_wait else f"a run that started goes on in the broker: `arbiter chain runs --chain {name}`"
    run = answer(reply, as_json, hint)
    if no_wait:
        run_id = run.get("runId") if isinstance(run, Mapping) else run
        if as_json:
            echo_json(run)
        else:
            click.echo(printable(run_id))
            click.echo(f"started; follow it with `arbiter chain status {printable(run_id)} --follow`", err=True)
        return
    print_run(run, as_json)
    if not isinstance(run, Mapping) or run.get("status") != "completed":
        sys.exit(1)


@chain.command("status", short_help="A run and its steps, from the store; --follow.")
@click.argument("run_id", metavar="RUN_ID")
@click.option("--follow", "-f", "follow_", is_flag=True, help="Keep printing each step's changes until the run ends.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=FOLLOW_TIMEOUT_S,
    show_default=True,
    metavar="S",
    help="With --follow: stop following after this many seconds.",
)
@json_option
@pass_context
def status(ctx: Context, run_id: str, follow_: bool, timeout: float, as_json: bool) -> None:
    """Show a chain run from the store (RUN_ID or a unique prefix): its chain, parameters, status,
    times and whether it was resumed, and each step's status, plugin, command, tries, time, error.

    \b
    --follow polls the store and prints each change as it happens, until the run ends (or
    --timeout); with --json it prints the run once it has ended. Exit 1 when the run ended without
    completing, when no run has this id, or when --follow gave up before the run ended.
    \b
      arbiter chain status run_0661a8ebd18f1e883bc45d9cf6b67ec4
      arbiter chain status run_0661a8ebd18f --follow        (a unique prefix will do)
      arbiter chain status run_0661a8ebd18f --follow --json
    """
    with project_store(ctx):
        run = _find_run(run_id)
        if not as_json:
            click.echo("\n".join(status_lines(run)))
        if follow_ and run["status"] not in ENDED:
            if not as_json:
                click.echo(f"\nfollowing (at most {timeout:g}s; Ctrl-C stops)")
            run = follow(run, timeout, echo=not as_json)
            if not as_json:
                click.echo("\n".join([f"run {run['status']}, took {duration_text(took_ms(run))}"] + outcome_lines(run)))
    if as_json:
        echo_json(run)
    if follow_ and run["status"] not in ENDED:
        click.echo(f"error: the run is still {run['status']} after {timeout:g}s", err=True)
        sys.exit(1)
    if ended_badly(run["status"]):
        sys.exit(1)


@chain.command("runs", short_help="Recent chain runs, newest first.")
@click.option("--last", default=20, show_default=True, type=click.IntRange(min=1), help="How many of the newest runs.")
@click.option("--chain", "chain_name", metavar="NAME", help="Only runs of this chain.")
@json_option
@pass_context
def runs_cmd(ctx: Context, last: int, chain_name: str | None, as_json: bool) -> None:
    """List chain runs from the store, newest first: id, chain, status, steps done of those the
    run takes (as the project declares its chain), when it started and how long it took.

    \b
      arbiter chain runs
      arbiter chain runs --last 5 --chain tenant-onboarding --json
    """
    with project_store(ctx):
        listed = [stored_run(runs.get(row["id"])) for row in runs.recent(last, chain=chain_name)]
    plans = ctx.snapshot().rules.chains
    for run in listed:
        steps = [step for step in run.pop("steps") if step["what"] != "compensation"]
        plan = plans.get(run["chain"]) if run["what"] == "chain" else None
        declared = steps_to_take(plan.items, {step["name"] for step in steps}) if plan else 0
        run["stepsDone"] = sum(step["status"] in DONE_STEP for step in steps)
        run["stepsTotal"] = max(len(steps), declared)
    if as_json:
        echo_json(listed)
    elif not listed:
        click.echo(f"no runs of chain '{printable(chain_name)}'" if chain_name else "no chain runs yet")
    else:
        rows = [
            [
                run["runId"],
                run["chain"] + (" (plan)" if run["what"] == "plan" else ""),
                run["status"],
                f"{run['stepsDone']}/{run['stepsTotal']}",
                _short_time(run["createdAt"]),
                duration_text(took_ms(run)),
            ]
            for run in listed
        ]
        columns = ["ID", "CHAIN", "STATUS", "STEPS", "STARTED", "TOOK"]
        click.echo("\n".join(table(columns, rows, numeric={"STEPS", "TOOK"})))


@chain.command("resume", short_help="Go on with a run that was cut short or failed.")
@click.argument("run_id", metavar="RUN_ID")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="S",
    help="Seconds to wait for the reply. Default: what the run's chain may take, as for `run`.",
)
@endpoint_option
@json_option
@pass_context
def resume(ctx: Context, run_id: str, timeout: float | None, endpoint: str | None, as_json: bool) -> None:
    """Go on with a run a broker stop cut short, or one that failed: from its first step not
    completed (completed steps keep their results). RUN_ID may be a unique prefix.

    \b
    Exit 1 when the broker refuses (UNKNOWN_RUN; RUN_FINISHED for a run that completed or was
    compensated; RUN_RUNNING for one going on) or the resumed run ends without completing.
    \b
      arbiter chain resume run_0661a8ebd18f1e883bc45d9cf6b67ec4
    """
    full_id, chain_name = resolve_run(ctx, run_id)
    reply = ask(ctx, endpoint, {"resume": full_id}, timeout or wait_budget_s(ctx, chain_name))
    run = answer(reply, as_json, f"a resumed run goes on in the broker: `arbiter chain status {full_id} --follow`")
    print_run(run, as_json)
    if isinstance(run, Mapping) and ended_badly(run.get("status")):
        sys.exit(1)


@chain.command("cancel", short_help="Cancel a running chain run.")
@click.argument("run_id", metavar="RUN_ID")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=REPLY_WAIT_S,
    show_default=True,
    metavar="S",
    help="Seconds to wait for each attempt.",
)
@endpoint_option
@json_option
@pass_context
def cancel(ctx: Context, run_id: str, timeout: float, endpoint: str | None, as_json: bool) -> None:
    """Cancel a running chain run: steps in flight are abandoned, a saga's completed steps are
    compensated. RUN_ID may be a unique prefix. Exit 1 when the broker refuses (UNKNOWN_RUN: no
    such run is going on) or does not answer.

    \b
      arbiter chain cancel run_0661a8ebd18f1e883bc45d9cf6b67ec4
    """
    full_id, _ = resolve_run(ctx, run_id)
    print_run(answer(ask(ctx, endpoint, {"cancel": full_id}, timeout, retries=2), as_json), as_json)
