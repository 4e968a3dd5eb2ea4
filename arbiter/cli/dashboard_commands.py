"""``arbiter dashboard``: serve a live web page on a running broker (arbiter.dashboard)."""

from __future__ import annotations

import ipaddress
import json
import signal
import sys
from typing import Any

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
    help="The broker's frontend, or several brokers' separated by commas. Default: every broker of `brokers` "
    "in configs/broker.yaml, else endpoints.frontend, else tcp://127.0.0.1:5555.",
)
@click.option(
    "--events",
    metavar="URL",
    help="The broker's event endpoint for subscribers, or one per --endpoint separated by commas. Default: "
    "those of `brokers` in configs/broker.yaml, else endpoints.events_sub, else tcp://127.0.0.1:5557.",
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
    with ARBITER_CURVE_KEY and ARBITER_BROKER_KEY, as every SDK client. Given several brokers
    (`brokers` of configs/broker.yaml, or lists), it shows each and listens to all of them.
    \b
      arbiter dashboard                                  http://127.0.0.1:8765/
      arbiter dashboard --port 9000 --endpoint tcp://127.0.0.1:6000 --events tcp://127.0.0.1:6002
      arbiter dashboard --endpoint tcp://a:5555,tcp://b:5555 --events tcp://a:5557,tcp://b:5557
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
    brokers = broker_list(ctx, endpoint, events)
    with project_store(ctx):
        sys.exit(_serve(ctx, host, port, brokers, token, interval, as_json))


def broker_list(ctx: Context, endpoint: str | None, events: str | None) -> list[tuple[str, str, str]]:
    """``(name, frontend, events)`` of every broker to show: ``--endpoint``/``--events`` (lists
    separated by commas, paired in order), else ``brokers`` of configs/broker.yaml, else the one
    broker of ``endpoints``. A broker of the list is named as there; any other by its frontend."""
    from .sdk_commands import configured_brokers

    listed = configured_brokers(ctx)
    named = {entry.get("frontend"): entry for entry in listed}
    frontends = [f.strip() for f in endpoint.split(",") if f.strip()] if endpoint else []
    given = [e.strip() for e in events.split(",") if e.strip()] if events else []
    if not frontends and listed and (not given or len(given) == len(listed)):
        return [
            (str(e["name"]), str(e["frontend"]), given[n] if given else str(e["events_sub"]))
            for n, e in enumerate(listed)
        ]
    if len(frontends) <= 1 and len(given) <= 1:
        frontend = broker_endpoint(ctx, frontends[0] if frontends else None)
        return [(_name(named.get(frontend), frontend), frontend, broker_endpoint(ctx, events, "events_sub"))]
    if given and len(given) != len(frontends):
        raise click.UsageError(f"--events gives {len(given)} endpoint(s) for {len(frontends)} broker(s)")
    if not given and not all(f in named for f in frontends):
        raise click.UsageError("give --events with one event endpoint per --endpoint, in the same order")
    return [
        (_name(named.get(f), f), f, given[n] if given else str(named[f]["events_sub"])) for n, f in enumerate(frontends)
    ]


def _name(entry: dict[str, Any] | None, frontend: str) -> str:
    return str(entry["name"]) if entry and entry.get("name") else frontend


def _serve(
    ctx: Context,
    host: str,
    port: int,
    brokers: list[tuple[str, str, str]],
    token: str | None,
    interval: float,
    as_json: bool,
) -> int:
    import uvicorn

    from arbiter.dashboard.app import Dashboard, create_app
    from arbiter.dashboard.hub import Hub
    from arbiter.dashboard.link import BrokerLink, Endpoints

    hub = Hub()
    link = BrokerLink(hub, [Endpoints(f, e, name) for name, f, e in brokers], interval=interval)
    frontend, events = ",".join(f for _, f, _ in brokers), ",".join(e for _, _, e in brokers)
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
