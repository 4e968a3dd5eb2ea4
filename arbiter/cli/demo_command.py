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
    cases, _ = load_cases(case_files([ctx.snapshot().project.rules_dir]))
    return [c.text for c in cases][:count]


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
    phases = (routing.get("collaborationPlan") or {}).get("phases") or []
    return {
        "text": text,
        "plugin": result.get("plugin"),
        "command": result.get("command"),
        "collaborators": [p["plugin"] for p in phases[1:]],
        "status": payload.get("status"),
        "error": (payload.get("error") or {}).get("code"),
        "message": _error_text(payload.get("error") or {}),
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
        if row["plugin"]:
            team = f" (then {', '.join(row['collaborators'])})" if row["collaborators"] else ""
            click.echo(printable(f"  {row['plugin']}{team} ran {row['command']} in {row['ms']} ms: {row['status']}"))
            result = row["result"]
            if row["error"]:
                click.echo(printable(f"  {row['error']}: {row['message']}"))
            elif isinstance(result, dict):
                click.echo(printable("  " + ", ".join(f"{k}={v}" for k, v in list(result.items())[:5])))
        else:
            nearest = f"; nearest: {', '.join(row['nearest'])}" if row["nearest"] else ""
            click.echo(printable(f"  no plugin fits ({row['error']}){nearest}"))


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
@click.option("--count", default=8, show_default=True, help="How many of the project's routing test cases to send.")
@click.option("--keep", is_flag=True, help="Leave broker and workers running until Ctrl-C.")
@broker_endpoint_option(help_="Where the demo's broker listens and its workers connect")
@json_option
@pass_context
def demo(ctx: Context, texts: tuple[str, ...], count: int, keep: bool, endpoint: str | None, as_json: bool) -> None:
    """Start the broker and a demo worker per plugin, route requests end to end, stop again.

    \b
    TEXT... are the requests to route; by default the first --count cases of the project's
    rules/*.test.yaml. Every request goes client -> broker (arbiter.route: classify, rules,
    match, decide, record) -> the chosen plugin's worker -> back. Endpoints come from
    configs/broker.yaml unless --endpoint moves the frontend (e.g. beside a running broker).
    Decisions land in the state database (`arbiter decisions`).
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
