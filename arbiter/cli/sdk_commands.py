"""``arbiter request`` and ``arbiter workers``: talk to a running broker from the shell.

``request`` is the quickest way to poke a service (a plugin, ``arbiter.route``, ``mmi.service``)
and see exactly what comes back; ``workers`` starts the demo workers for the shipped plugins so
a fresh checkout has something answering behind the broker.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from typing import Any

import click

from arbiter.sdk.brokers import endpoint_list
from arbiter.sdk.client import Client, RequestTimeout, build_request
from arbiter.wire import envelope as env

from .common import Context, broker_endpoint, endpoint_option, pass_context, unknown_name


def configured_brokers(ctx: Context) -> list[dict[str, Any]]:
    """``brokers`` of configs/broker.yaml: every broker of the deployment (none: one broker)."""
    sections, _problems = ctx.configs()
    return [dict(entry) for entry in (sections.get("broker") or {}).get("brokers") or []]


def broker_frontends(ctx: Context, endpoint: str | None) -> list[str]:
    """Where a client or a worker goes: ``--endpoint`` (several separated by commas), else the
    frontend of every broker of ``brokers``, else the one broker of ``endpoints``."""
    if endpoint:
        return endpoint_list(endpoint)
    return [entry["frontend"] for entry in configured_brokers(ctx)] or [broker_endpoint(ctx, None)]


def heartbeat_settings(ctx: Context) -> dict[str, Any]:
    """Workers must heartbeat at the broker's rate or the broker will think they died."""
    try:
        beat = ctx.snapshot().configs["broker"]["heartbeat"]
        return {"heartbeat_interval": float(beat["interval_ms"]) / 1000, "liveness": int(beat["liveness"])}
    except (KeyError, TypeError, ValueError):
        return {}


def _envelope_for(service: str, data: Any, timeout: float, retries: int) -> dict[str, Any]:
    """The JSON argument is the payload; an object that already has a payload is sent whole."""
    if isinstance(data, dict) and isinstance(data.get("payload"), dict) and "messageId" in data:
        return data
    if not isinstance(data, dict):
        raise click.UsageError(
            "JSON must be an object: the request payload, e.g. "
            '\'{"command": "analyze-document", "parameters": {...}}\' (or use --raw)'
        )
    request = build_request(
        service, str(data.get("command", "")), data.get("parameters"), timeout, retries, source="arbiter-cli"
    )
    request["payload"] = data
    return request


def _print_reply(body: bytes) -> None:
    try:
        click.echo(json.dumps(env.decode(body), indent=2, ensure_ascii=False))
    except ValueError:
        click.echo(body.decode("utf-8", errors="replace"))


@click.command("request")
@click.argument("service")
@click.argument("payload", metavar="JSON", default="{}")
@endpoint_option
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for each attempt.")
@click.option("--retries", default=2, show_default=True, help="Attempts after the first (Lazy Pirate).")
@click.option("--raw", is_flag=True, help="Send JSON (any text) as the body as-is, without an envelope.")
@pass_context
def request(
    ctx: Context, service: str, payload: str, endpoint: str | None, timeout: float, retries: int, raw: bool
) -> None:
    """Send one request to SERVICE through the broker and print the reply.

    \b
    JSON is the envelope's payload; it is wrapped in a fresh envelope (messageId, trace ids,
    expiry) unless --raw is given. With several brokers (`brokers` in configs/broker.yaml, or
    --endpoint A,B) an attempt that gets no answer goes to the next one, with the same messageId.
    Exit 1 when the reply is an error or nothing answers.
    \b
      arbiter request exec-automator '{"command": "analyze-document", "parameters": {"documentPath": "rfp.pdf"}}'
      arbiter request arbiter.route '{"text": "deploy the tenant to production"}'
      arbiter request mmi.service jira-orchestrator --raw
    """
    urls = broker_frontends(ctx, endpoint)
    if raw:
        body: Any = payload.encode()
    else:
        try:
            body = _envelope_for(service, json.loads(payload), timeout, retries)
        except json.JSONDecodeError as exc:
            raise click.UsageError(f"JSON is not valid JSON: {exc}") from exc
    with Client(urls, timeout=timeout, retries=retries) as client:
        try:
            reply = client.request(service, body)
        except RequestTimeout as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        if client.stats.retries:
            click.echo(f"answered by {client.endpoint} after {client.stats.retries} retr(ies)", err=True)
    _print_reply(reply.body)
    if not reply.ok:
        sys.exit(1)


@click.command("workers")
@click.option("--plugin", "names", multiple=True, metavar="NAME", help="Only this plugin (repeatable).")
@endpoint_option
@click.option("--delay-ms", default=20, show_default=True, help="Simulated work per request.")
@click.option("--credit", default=1, show_default=True, help="Requests each worker may hold at once.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines as text or as JSON objects (docs/TRACING.md).",
)
@pass_context
def workers(
    ctx: Context, names: tuple[str, ...], endpoint: str | None, delay_ms: int, credit: int, log_format: str
) -> None:
    """Run demo workers for the shipped plugins until Ctrl-C (one worker per plugin).

    Each worker registers the plugin's name as its service and answers every command the
    plugin declares, with results computed from the parameters.
    """
    from arbiter.sdk.demo_workers import demo_workers
    from arbiter.telemetry import logs

    logs.configure(log_format)

    snapshot = ctx.snapshot()
    for name in names:
        if name not in snapshot.plugins:
            raise unknown_name("plugin", name, snapshot.plugins)
    chosen = [snapshot.plugins[n] for n in names] if names else list(snapshot.plugins.values())
    urls = broker_frontends(ctx, endpoint)  # one connection per broker for each worker
    url = ",".join(urls)
    running = demo_workers(chosen, url, delay=delay_ms / 1000, credit=credit, **heartbeat_settings(ctx))
    for worker in running:
        worker.start()
    click.echo(f"serving {len(running)} worker(s) on {url}: {', '.join(w.service for w in running)}", err=True)
    _wait_for_signal()
    click.echo("stopping workers", err=True)
    for worker in running:
        worker.stop()


def _wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM, so ``kill`` stops the workers as gracefully as Ctrl-C."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    while not stop.wait(0.5):
        pass


sdk_commands = [request, workers]
