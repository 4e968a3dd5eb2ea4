"""``arbiter demo``: the whole system on one machine — broker, a worker per plugin, routed requests.

It starts the broker and the demo workers as real processes (exactly what `arbiter broker` and
`arbiter workers` run), sends requests through ``arbiter.route``, prints what each plugin did,
and stops both processes again (or leaves them running with ``--keep``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from arbiter.routing.cases import case_files, load_cases
from arbiter.sdk.client import Client, RequestTimeout
from arbiter.wire import envelope as env

from .common import Context, broker_endpoint, broker_endpoint_option, echo_json, json_option, pass_context
from .tables import printable

STARTUP_S = 30.0


def _arbiter(ctx: Context, *args: str) -> list[str]:
    """The same CLI, as a child process. Paths are absolute because the child runs elsewhere."""
    command = [sys.executable, "-m", "arbiter", "--root", str(ctx.root.resolve())]
    for path in ctx.plugin_dirs or ():
        command += ["--plugins-dir", str(Path(path).resolve())]
    return command + list(args)


def _sample_texts(ctx: Context, count: int) -> list[str]:
    """configs/demo.yaml's requests, else the texts of the project's routing test cases."""
    snapshot = ctx.snapshot()
    texts = list(snapshot.configs["demo"]["requests"])
    if not texts:
        cases, _ = load_cases(case_files([snapshot.project.rules_dir]))
        texts = [c.text for c in cases]
    return texts[:count]


def _wait_for_services(frontend: str, services: list[str], processes: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + STARTUP_S
    with Client(frontend, timeout=0.5, retries=0) as client:
        while time.monotonic() < deadline:
            for process in processes:
                if process.poll() is not None:
                    raise click.ClickException(
                        f"`{' '.join(process.args[2:])}` exited with {process.returncode}; see its log"
                    )
            try:
                if all(client.has_service(s) for s in services):
                    return
            except RequestTimeout:
                pass
            time.sleep(0.1)
    raise click.ClickException(f"the broker or its workers did not come up within {STARTUP_S:g}s")


def _route(client: Client, text: str) -> dict[str, Any]:
    request = env.new_request("arbiter.route", "route", source="arbiter-demo")
    request["payload"] = {"text": text}
    started = time.perf_counter()
    reply = client.request("arbiter.route", request)
    elapsed = (time.perf_counter() - started) * 1000
    payload = reply.payload
    result = payload.get("result") or {}
    decision = result.get("decision") or payload.get("error", {}).get("decision") or {}
    routing = decision.get("routingDecision") or {}
    planned = (routing.get("collaborationPlan") or {}).get("phases") or []
    error = payload.get("error") or {}
    ran = result.get("phases") or error.get("phases") or []
    return {
        "text": text,
        "plugin": result.get("plugin"),
        "command": result.get("command"),
        "collaborators": [p["plugin"] for p in planned[1:]],
        "phases": [{k: p.get(k) for k in ("plugin", "command", "status", "result", "error")} for p in ran],
        "status": payload.get("status"),
        "error": error.get("code"),
        "message": _error_text(error),
        "missing": error.get("missing") or [],
        "result": result.get("result"),
        "nearest": routing.get("candidates") or [],
        "ms": round(elapsed, 1),
    }


def _error_text(error: dict[str, Any]) -> str:
    """The plugin's own error when there is one: it says what was missing."""
    inner = error.get("plugin")
    if isinstance(inner, dict):
        return f"{inner.get('code')}: {inner.get('message')}"
    return str(error.get("message", ""))


def _print(rows: list[dict[str, Any]]) -> None:
    """What each request did; what a worker answered is escaped, it is not the demo's own text."""
    for row in rows:
        click.echo(f"\n> {printable(row['text'])}")
        if row["error"] == "NO_ROUTE":
            nearest = f"; nearest: {', '.join(row['nearest'])}" if row["nearest"] else ""
            click.echo(printable(f"  no plugin fits (NO_ROUTE){nearest}"))
        elif row["error"] == "NEEDS_INPUT":
            click.echo(
                printable(f"  asks for input (NEEDS_INPUT) in {row['ms']} ms, before any worker: {row['message']}")
            )
        elif row["phases"]:
            click.echo(printable(f"  a plan of {len(row['phases'])} phases in {row['ms']} ms: {row['status']}"))
            for phase in row["phases"]:
                click.echo(printable(f"    {phase['plugin']} ran {phase['command']}: {phase['status']}"))
                _print_result(phase["result"], phase["error"], "      ")
        elif row["plugin"]:
            team = f" (then {', '.join(row['collaborators'])})" if row["collaborators"] else ""
            click.echo(printable(f"  {row['plugin']}{team} ran {row['command']} in {row['ms']} ms: {row['status']}"))
            _print_result(row["result"], row["error"] and f"{row['error']}: {row['message']}", "  ")
        else:
            click.echo(printable(f"  {row['error']}: {row['message']}"))


def _print_result(result: Any, error: Any, indent: str) -> None:
    if error:
        click.echo(printable(f"{indent}{error}"))
    elif isinstance(result, dict):
        click.echo(printable(indent + ", ".join(f"{k}={v}" for k, v in list(result.items())[:5])))


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@click.command("demo")
@click.argument("texts", nargs=-1)
@click.option("--count", default=8, show_default=True, help="How many of the default requests to send.")
@click.option("--keep", is_flag=True, help="Leave broker and workers running until Ctrl-C.")
@broker_endpoint_option(help_="Where the demo's broker listens and its workers connect")
@json_option
@pass_context
def demo(ctx: Context, texts: tuple[str, ...], count: int, keep: bool, endpoint: str | None, as_json: bool) -> None:
    """Start the broker and a demo worker per plugin, route requests end to end, stop again.

    \b
    TEXT... are the requests to route; by default the first --count of configs/demo.yaml's
    requests (without any, of the project's rules/*.test.yaml cases). Every request goes
    client -> broker (arbiter.route: classify, rules, match, decide, record, bind the command's
    parameters) -> the chosen plugin's worker, or each phase of its collaboration plan -> back.
    A request whose command needs a parameter the text does not state is answered NEEDS_INPUT,
    naming it. Endpoints come from configs/broker.yaml unless --endpoint moves the frontend
    (e.g. beside a running broker). Decisions land in the state database (`arbiter decisions`).
    \b
      arbiter demo
      arbiter demo "deploy the release to production on kubernetes with helm"
      arbiter demo --endpoint tcp://127.0.0.1:6000
    """
    snapshot = ctx.snapshot()
    frontend = broker_endpoint(ctx, endpoint)
    moved = ["--endpoint", frontend] if endpoint else []
    requests = list(texts) or _sample_texts(ctx, count)
    log_dir = snapshot.project.state_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    logs = [open(log_dir / name, "wb") for name in ("demo-broker.log", "demo-workers.log")]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Children start in the state directory: `python -m` puts its working directory on the import
    # path, and in a checkout the source tree there would shadow the installed package.
    spawn = {"stderr": subprocess.STDOUT, "env": environment, "cwd": log_dir}
    broker_args = ["broker", "--frontend", frontend] if endpoint else ["broker"]
    processes = [subprocess.Popen(_arbiter(ctx, *broker_args), stdout=logs[0], **spawn)]
    try:
        processes.append(subprocess.Popen(_arbiter(ctx, "workers", *moved), stdout=logs[1], **spawn))
        click.echo(f"broker on {frontend}, {len(snapshot.plugins)} workers; logs in {Path(log_dir)}", err=True)
        _wait_for_services(frontend, sorted(snapshot.plugins), processes)
        with Client(frontend, timeout=10, retries=1) as client:
            rows = [_route(client, text) for text in requests]
        if as_json:
            echo_json(rows)
        else:
            _print(rows)
        if keep:
            click.echo("\nrunning; Ctrl-C stops broker and workers", err=True)
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            try:
                while all(p.poll() is None for p in processes):
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
    finally:
        _stop(processes)
        for log in logs:
            log.close()
