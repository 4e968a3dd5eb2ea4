"""``arbiter dashboard``: serve a live web page on a running broker (arbiter.dashboard)."""

from __future__ import annotations

import ipaddress
import json
import signal
import sys

import click

from .common import Context, broker_endpoint, pass_context, project_store

LOOPBACK_NAMES = ("localhost", "ip6-localhost")


def is_loopback(host: str) -> bool:
    """Only this machine can reach the address (127.0.0.0/8, ::1, localhost)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command("dashboard")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve the page on.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="Port to serve on.")
@click.option(
    "--endpoint",
    metavar="URL",
    help="The broker's frontend. Default: endpoints.frontend of configs/broker.yaml, else tcp://127.0.0.1:5555.",
)
@click.option(
    "--events",
    metavar="URL",
    help="The broker's event endpoint for subscribers. Default: endpoints.events_sub of configs/broker.yaml, "
    "else tcp://127.0.0.1:5557.",
)
@click.option(
    "--token",
    metavar="T",
    envvar="ARBITER_DASHBOARD_TOKEN",
    help="Require this token on every request (env ARBITER_DASHBOARD_TOKEN). Needed for a --host other "
    "machines reach; optional on loopback.",
)
@click.option(
    "--interval", default=1.0, show_default=True, type=click.FloatRange(0.2, 60), help="Seconds between status polls."
)
@click.option("--json", "as_json", is_flag=True, help="Announce the address as one JSON line.")
@pass_context
def dashboard(
    ctx: Context,
    host: str,
    port: int,
    endpoint: str | None,
    events: str | None,
    token: str | None,
    interval: float,
    as_json: bool,
) -> None:
    """Serve a live dashboard of a running broker: services and workers with queues and circuit
    states, routing decisions with their explanations, chain runs drawn as graphs with each
    step's progress, dead letters (replay asks first), the last reload, and charts of the last
    minutes (request rate, latency p50/p90/p99, errors). It updates itself; no reload needed.

    \b
    It reads the broker through its own services and event bus, and the project's store for
    history (configs/state.yaml), as the other commands do. A broker with CURVE on is reached
    with ARBITER_CURVE_KEY and ARBITER_BROKER_KEY, as every SDK client.
    \b
      arbiter dashboard                                  http://127.0.0.1:8765/
      arbiter dashboard --port 9000 --endpoint tcp://127.0.0.1:6000 --events tcp://127.0.0.1:6002
      arbiter dashboard --host 0.0.0.0 --token "$(openssl rand -hex 16)"
                                                         open http://HOST:8765/?token=...
    \b
    Exit codes: 0 stopped (Ctrl-C or SIGTERM), 1 it could not start (the store, the port),
    2 usage (a non-loopback --host without --token).
    """
    if not is_loopback(host) and not token:
        raise click.UsageError(
            f"--host {host} lets other machines reach the dashboard: give --token T (or set "
            "ARBITER_DASHBOARD_TOKEN), then open the page with ?token=T"
        )
    frontend = broker_endpoint(ctx, endpoint)
    events_url = broker_endpoint(ctx, events, "events_sub")
    with project_store(ctx):
        sys.exit(_serve(ctx, host, port, frontend, events_url, token, interval, as_json))


def _serve(
    ctx: Context, host: str, port: int, frontend: str, events: str, token: str | None, interval: float, as_json: bool
) -> int:
    import uvicorn

    from arbiter.dashboard.app import Dashboard, create_app
    from arbiter.dashboard.hub import Hub
    from arbiter.dashboard.link import BrokerLink, Endpoints

    hub = Hub()
    link = BrokerLink(hub, Endpoints(frontend, events), interval=interval)
    app = create_app(Dashboard(hub, link, ctx.snapshot(), token))
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    shown_host = f"[{host}]" if ":" in host else host
    address = f"http://{shown_host}:{port}/" + ("?token=..." if token else "")
    announce = (
        json.dumps({"url": address, "endpoint": frontend, "events": events})
        if as_json
        else (f"dashboard on {address} (broker {frontend}, events {events}); Ctrl-C stops it")
    )
    click.echo(announce)
    sys.stdout.flush()
    for sig in (signal.SIGINT, signal.SIGTERM):  # uvicorn raises the signal again once it has stopped:
        signal.signal(sig, lambda *_: None)  # land it here, so a requested stop exits 0
    server.run()
    if not server.started:
        click.echo(f"error: could not serve on {host}:{port} (is the port taken?)", err=True)
        return 1
    return 0
