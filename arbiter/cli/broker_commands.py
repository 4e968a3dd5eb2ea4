"""``arbiter broker``, ``arbiter status`` and ``arbiter events``: run the daemon and watch it."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
import orjson
import zmq

from arbiter.project.schemas import metrics_address
from arbiter.sdk.curve import CurveKeys, connect

from .common import (
    Context,
    broker_endpoint,
    echo_json,
    endpoint_option,
    events_endpoint_option,
    json_option,
    pass_context,
    project_options,
)
from .tables import printable, table

endpoint_options = [
    click.option(
        "--name",
        metavar="NAME",
        help="Which broker of `brokers` in configs/broker.yaml this is: its endpoints, and the name its "
        "chain runs are leased to (docs/DEPLOYMENT.md).",
    ),
    click.option("--frontend", metavar="ENDPOINT", help="MDP endpoint for clients and workers (ROUTER)."),
    click.option("--events-pub", metavar="ENDPOINT", help="Where publishers connect (XSUB)."),
    click.option("--events-sub", metavar="ENDPOINT", help="Where subscribers connect (XPUB)."),
    click.option(
        "--metrics",
        metavar="HOST:PORT",
        callback=lambda _ctx, _param, value: _metrics_address(value),
        help="Serve Prometheus /metrics there (a bare PORT: on 127.0.0.1); overrides metrics.address of "
        "configs/broker.yaml (docs/METRICS.md).",
    ),
    click.option(
        "--insecure",
        is_flag=True,
        help="Serve an address other machines reach without CURVE (refused otherwise; docs/SECURITY.md).",
    ),
    click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="Log lines as text or as JSON objects (docs/TRACING.md).",
    ),
    click.option(
        "--otel",
        is_flag=True,
        help="Export spans with OpenTelemetry (the otel extra; OTEL_* variables choose the exporter).",
    ),
]


def _metrics_address(value: str | None) -> str | None:
    """``--metrics``: HOST:PORT, [IPv6]:PORT or PORT, checked before anything starts."""
    if value is None:
        return None
    try:
        metrics_address(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: {exc}") from None
    return value


def with_endpoint_options(command):
    for option in reversed(endpoint_options):
        command = option(command)
    return command


def _serve(root: Path, plugin_dirs: list[Path] | None, insecure: bool, **endpoints: Any) -> None:
    from arbiter.broker.daemon import serve

    log_format, otel = endpoints.pop("log_format", "text"), bool(endpoints.pop("otel", False))
    sys.exit(serve(root, plugin_dirs, insecure=insecure, log_format=log_format, otel=otel, **endpoints))


@click.command("broker")
@with_endpoint_options
@pass_context
def broker(ctx: Context, insecure: bool, **endpoints: str | None) -> None:
    """Run the broker daemon on the project (endpoints default to configs/broker.yaml).

    \b
    It logs what it bound; SIGTERM or Ctrl-C stops it cleanly (in-flight requests are answered
    or dead-lettered); SIGHUP reloads rules/, configs/ and plugins/ (so does saving a file there,
    unless configs/broker.yaml sets reload.watch: false). An invalid project is refused at start;
    an invalid edit later is refused and the previous snapshot keeps serving.
    \b
      arbiter broker
      arbiter --root ./my-project broker --frontend tcp://127.0.0.1:6000
    """
    _serve(ctx.root, ctx.plugin_dirs, insecure, **endpoints)


@click.command("broker", context_settings={"help_option_names": ["-h", "--help"]})
@project_options
@with_endpoint_options
def broker_main(root: Path, plugin_dirs: tuple[Path, ...], insecure: bool, **endpoints: str | None) -> None:
    """Run the Arbiter broker (the same daemon as `arbiter broker`)."""
    _serve(root, list(plugin_dirs) or None, insecure, **endpoints)


@click.command("status")
@endpoint_option
@click.option("--timeout", default=3.0, show_default=True, help="Seconds to wait for the broker.")
@click.option("--all", "every", is_flag=True, help="Every broker of `brokers` in configs/broker.yaml, a row each.")
@json_option
@pass_context
def status(ctx: Context, endpoint: str | None, timeout: float, every: bool, as_json: bool) -> None:
    """Ask a running broker how it is: services, workers, queues, drops, reloads.

    Exit 1 when no broker answers, or when its last reload was refused; with --all, when any
    broker of the list does not answer or refused its last reload.
    """
    from arbiter.sdk.client import Client, RequestTimeout
    from arbiter.wire.envelope import new_request

    if every:
        sys.exit(_status_all(ctx, timeout, as_json))
    url = broker_endpoint(ctx, endpoint)
    with Client(url, timeout=timeout, retries=0) as client:
        try:
            reply = client.request("arbiter.status", new_request("arbiter.status", "status", source="arbiter-cli"))
        except RequestTimeout:
            click.echo(f"error: no broker answered on {url} within {timeout:g}s", err=True)
            sys.exit(1)
    data = reply.result
    if as_json:
        echo_json(data)
    else:
        click.echo(render_status(data), nl=False)
    sys.exit(0 if (data.get("snapshot") or {}).get("lastReloadOk", True) else 1)


def _status_all(ctx: Context, timeout: float, as_json: bool) -> int:
    """One row per broker of the list: does it answer, its snapshot's fingerprint (each broker
    reloads the same files: equal fingerprints say they serve the same project), workers, pending."""
    from arbiter.sdk.client import Client, RequestTimeout
    from arbiter.wire.envelope import new_request

    from .sdk_commands import configured_brokers

    listed = configured_brokers(ctx) or [{"name": "-", "frontend": broker_endpoint(ctx, None)}]
    found: list[dict[str, Any]] = []
    for entry in listed:
        with Client(entry["frontend"], timeout=timeout, retries=0) as client:
            try:
                data = client.request("arbiter.status", new_request("arbiter.status", "status", source="arbiter-cli"))
                found.append({"name": entry["name"], "frontend": entry["frontend"], "status": data.result})
            except RequestTimeout:
                found.append({"name": entry["name"], "frontend": entry["frontend"], "status": None})
    if as_json:
        echo_json(found)
    else:
        rows = [_status_row(each) for each in found]
        headers = ["broker", "frontend", "state", "pid", "up s", "fingerprint", "workers", "pending"]
        click.echo("\n".join(table(headers, rows, numeric=["pid", "up s", "workers", "pending"])))
    healthy = [b["status"] and (b["status"].get("snapshot") or {}).get("lastReloadOk", True) for b in found]
    return 0 if all(healthy) else 1


def _status_row(each: dict[str, Any]) -> list[Any]:
    data = each["status"]
    if data is None:
        return [each["name"], each["frontend"], "NO ANSWER", "", "", "", "", ""]
    snap = data.get("snapshot") or {}
    state = "up" if snap.get("lastReloadOk", True) else "RELOAD REFUSED"
    return [each["name"], each["frontend"], state, data.get("pid"), data.get("uptimeSeconds"),
            str(snap.get("fingerprint", ""))[:12], data.get("workers"), data.get("pending")]  # fmt: skip


def render_status(data: dict[str, Any]) -> str:
    snap = data.get("snapshot", {})
    counters = data.get("counters", {})
    lines = [
        f"broker pid {data.get('pid')} up {data.get('uptimeSeconds')}s on {data['endpoints']['frontend']}",
        f"snapshot {str(snap.get('fingerprint', ''))[:12]} loaded {snap.get('loadedAt')}: "
        f"{snap.get('plugins')} plugins, {snap.get('rules')} rules, {counters.get('reloads', 0)} reload(s)",
    ]
    if snap.get("lastError"):
        error = snap["lastError"]
        if snap.get("lastReloadOk", True):
            lines.append(f"an earlier reload was refused at {error['at']}; a later one succeeded:")
        else:
            lines.append(f"LAST RELOAD REFUSED at {error['at']} (still serving the snapshot above):")
        lines += [f"  {e}" for e in error["errors"]]
    lines.append(f"{data.get('workers')} worker(s), {data.get('pending')} request(s) pending")
    lines.append("")
    counts = ["workers", "credit", "queued", "inflight", "requests"]
    services = [[name, *(s[key] for key in counts)] for name, s in sorted(data.get("services", {}).items())]
    lines += table(["service", *counts], services, numeric=counts)
    unhealthy = {n: c for n, c in data.get("circuits", {}).items() if c["state"] != "closed"}
    lines.append("")
    if unhealthy:
        for name, c in sorted(unhealthy.items()):
            extra = f", retry in {c['retryInSeconds']}s" if "retryInSeconds" in c else ""
            lines.append(f"circuit {name}: {c['state'].upper()} ({c['recentFailures']} recent failures{extra})")
    else:
        lines.append(f"circuits: all {len(data.get('circuits', {}))} closed")
    dropped = counters.get("dropped", {})
    plain = {k: v for k, v in counters.items() if k != "dropped"}
    lines.append("")
    lines.append("counters: " + (", ".join(f"{k}={v}" for k, v in sorted(plain.items())) or "none"))
    lines.append("dropped:  " + (", ".join(f"{k}={v}" for k, v in sorted(dropped.items())) or "none"))
    lines += [_render_writer(name, w) for name, w in sorted((data.get("writers") or {}).items())]
    return "\n".join(lines) + "\n"


def _render_writer(name: str, writer: dict[str, Any]) -> str:
    """One line per database writer: what it stored, what waits, what was lost and why."""
    parts = [f"written={writer.get('written', 0)}", f"dropped={writer.get('dropped', 0)}"]
    parts += [f"{key}={writer[key]}" for key in ("queued", "restarts") if key in writer]
    last = (writer.get("errors") or [None])[-1]
    return f"{name + ':':9} " + ", ".join(parts) + (f" (last error: {last})" if last else "")


@click.command("events")
@click.argument("topics", nargs=-1)
@events_endpoint_option
@click.option("--count", type=int, default=0, help="Stop after this many events (0: run until Ctrl-C).")
@click.option("--timeout", type=float, default=0.0, help="Stop after this many seconds without an event.")
@click.option("--all", "every", is_flag=True, help="Every broker of `brokers`; each line says which broker.")
@json_option
@pass_context
def events(
    ctx: Context,
    topics: tuple[str, ...],
    endpoint: str | None,
    count: int,
    timeout: float,
    every: bool,
    as_json: bool,
) -> None:
    """Print events from the broker as they happen.

    \b
    TOPIC is a prefix (`routing/`) or a pattern with * for one path segment and ** for any
    number (`plugin/*/events`); none means everything.
    \b
      arbiter events                           everything
      arbiter events routing/decision system/  decisions, health, reloads, dead letters
      arbiter events 'plugin/*/circuit-breaker' --json
    """
    from .sdk_commands import configured_brokers

    listed = configured_brokers(ctx) if every else []
    sources = {e["name"]: e["events_sub"] for e in listed} or {"": broker_endpoint(ctx, endpoint, "events_sub")}
    poller, names = zmq.Poller(), {}
    for name, url in sources.items():  # one socket per broker, so that each line says whose it is
        sock = zmq.Context.instance().socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        for topic in topics or ("",):
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        connect(sock, url, CurveKeys.from_env())  # a broker with security on: ARBITER_CURVE_KEY, ARBITER_BROKER_KEY
        poller.register(sock, zmq.POLLIN)
        names[sock] = name
    seen = 0
    last = time.monotonic()
    try:
        while not count or seen < count:
            ready = dict(poller.poll(200))
            if not ready:
                if timeout and time.monotonic() - last > timeout:
                    break
                continue
            last = time.monotonic()
            for sock in ready:
                frames = sock.recv_multipart()
                if b"*" in frames[0] and frames[0].decode("utf-8", "replace") not in topics:
                    continue  # another subscriber's wildcard copy that our prefix also matches
                seen += 1
                click.echo(_event_line(frames, as_json, names[sock]))
    except KeyboardInterrupt:
        pass
    finally:
        for sock in names:
            sock.close()


def _event_line(frames: list[bytes], as_json: bool, broker: str = "") -> str:
    try:
        event = orjson.loads(frames[1]) if len(frames) > 1 else {}
    except orjson.JSONDecodeError:
        event = {"payload": frames[1].decode("utf-8", "replace")}
    topic = event.get("topic") if isinstance(event, dict) else None
    topic = topic or frames[0].decode("utf-8", "replace")
    if as_json:
        whose = {"broker": broker} if broker else {}
        return json.dumps({"topic": topic, "event": event, **whose}, ensure_ascii=False)
    payload = event.get("payload", event) if isinstance(event, dict) else event
    summary = " ".join(f"{k}={v}" for k, v in payload.items()) if isinstance(payload, dict) else str(payload)
    at = event.get("timestamp", "") if isinstance(event, dict) else ""
    return printable(f"{f'[{broker}] ' if broker else ''}{at} {topic} {summary}".strip())
