"""Running the broker as a process: load the project, open the store, start the writers and the
reloader, install the signal handlers, serve, and shut everything down in order.

``arbiter broker`` and ``python broker.py`` both end up in :func:`serve`.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Sequence

from arbiter import __version__
from arbiter.broker import deciders, keepers
from arbiter.broker.guard import Guard, InsecureBind, check_bind
from arbiter.broker.leases import RunLeases
from arbiter.broker.loop import Broker
from arbiter.broker.metrics_http import MetricsServer
from arbiter.broker.reload import Reloader
from arbiter.broker.settings import Settings
from arbiter.dsl.durations import parse_ms
from arbiter.project.snapshot import build_snapshot
from arbiter.routing.pipeline import Router
from arbiter.security.config import security_of
from arbiter.store import database as state
from arbiter.store import runs
from arbiter.store.recorder import Recorder
from arbiter.store.retention import Retention
from arbiter.telemetry import logs
from arbiter.telemetry import otel as otel_export

log = logging.getLogger("arbiter.broker")


class StartupError(RuntimeError):
    """The project cannot be served; the message says what to fix."""


def build_broker(
    root: Path, plugin_dirs: Sequence[Path] | None = None, insecure: bool = False, **endpoints: str | None
) -> tuple[Broker, Reloader]:
    """Everything :func:`serve` runs, bound and ready; raises :class:`StartupError` on a bad project."""
    snapshot = build_snapshot(root, plugin_dirs)
    if not snapshot.ok:
        lines = "\n".join(d.format() for d in snapshot.errors[:20])
        raise StartupError(f"the project has errors; fix them (arbiter check-config, arbiter lint):\n{lines}")
    database_url = snapshot.configs["state"]["database"]
    state.open_store(database_url, snapshot.project.root)
    try:
        settings = Settings.of(snapshot.configs["broker"], **endpoints)
    except ValueError as exc:  # --name that configs/broker.yaml does not list
        raise StartupError(str(exc)) from None
    security, problems = security_of(snapshot)
    if any(p.severity == "error" for p in problems):
        lines = "\n".join(p.format() for p in problems[:20])
        raise StartupError(f"configs/security.yaml has errors (arbiter check-config):\n{lines}")
    try:
        check_bind(security, insecure, settings.frontend, settings.events_pub, settings.events_sub)
    except InsecureBind as exc:
        raise StartupError(str(exc)) from None
    batch_s = snapshot.configs["state"]["batch_ms"] / 1000
    retention = Retention.of(snapshot.configs["state"]["retention"], parse_ms)
    retention = retention.with_events(snapshot.configs["state"]["event_retention"], parse_ms)
    recorder = Recorder(database_url, snapshot.project.root, interval_s=batch_s, retention=retention)
    broker = Broker(
        snapshot,
        Router(snapshot),
        settings,
        decisions=recorder,
        dead_letters=recorder.dead_letters,  # one process writes both, in order
    )
    if security.enabled:
        broker.guard = Guard(security, broker.publish, broker.post)
    reload_config = snapshot.configs["broker"]["reload"]
    reloader = Reloader(
        snapshot.project,
        snapshot.fingerprint,
        on_ready=lambda snap, router: broker.post(lambda: broker.swap(snap, router)),
        on_error=lambda errors: broker.post(lambda: broker.reload_failed(errors)),
        on_restored=lambda digest: broker.post(lambda: broker.reload_restored(digest)),
        debounce_ms=reload_config["debounce_ms"],
        watch=reload_config["watch"],
    )
    try:
        broker.bind()
    except Exception as exc:
        broker.decisions.close(timeout=2)  # type: ignore[union-attr]  # its process must not outlive us
        raise StartupError(f"cannot bind: {exc} (is another broker running on these endpoints?)") from exc
    if settings.metrics_address:
        try:
            broker.metrics_server = MetricsServer(broker, settings.metrics_address, __version__)
        except (OSError, ValueError) as exc:
            broker.decisions.close(timeout=2)  # type: ignore[union-attr]
            raise StartupError(f"cannot serve metrics on {settings.metrics_address}: {exc}") from exc
    helper_env = broker.guard.helper_keys.helper_env() if broker.guard is not None else {}
    if settings.deciders > 0:  # 0: decisions are made on the loop
        deciding = deciders.for_project(settings.deciders, settings, snapshot.project)
        deciding.env = helper_env
        broker.deciders = deciding.start(broker.pool)
    if settings.state_keepers > 0:  # 0: arbiter.state answers UNAVAILABLE
        keeping = keepers.for_project(settings.state_keepers, settings, snapshot.project.root, database_url)
        keeping.env = helper_env
        broker.keepers = keeping.start(broker.pool)
    resume_runs(broker, settings, database_url)
    return broker, reloader


def resume_runs(broker: Broker, settings: Settings, database_url: str) -> None:
    """Go on with the runs a stop cut short. On PostgreSQL, which several brokers may share, only
    those leased to this broker or whose lease expired, and from now on keep the leases
    (docs/DEPLOYMENT.md); on SQLite, every unfinished run."""
    chains = broker.chains
    if not database_url.startswith("postgres"):
        chains.resume_stored(runs.unfinished(), broker.snapshot.rules.chains)
        return
    chains.owner, chains.lease_s = settings.lease_owner, settings.run_lease_s
    chains.leases = RunLeases(
        settings.lease_owner,
        settings.run_lease_s,
        lambda taken: broker.post(lambda: chains.resume_stored(taken, broker.snapshot.rules.chains)),
    )
    chains.resume_stored(chains.leases.at_start(), broker.snapshot.rules.chains)
    chains.leases.start()


def serve(
    root: Path,
    plugin_dirs: Sequence[Path] | None = None,
    insecure: bool = False,
    log_format: str = "text",
    otel: bool = False,
    **endpoints: str | None,
) -> int:
    """Run the broker in this process until SIGTERM/SIGINT; SIGHUP reloads. Returns an exit code.
    ``log_format``: text or JSON lines; ``otel``: export spans (also on with ``OTEL_TRACES_EXPORTER``)."""
    logs.configure(log_format, logging.INFO, sys.stderr)
    try:
        broker, reloader = build_broker(root, plugin_dirs, insecure, **endpoints)
    except (StartupError, state.StoreError) as exc:
        log.error("%s", exc)
        return 1
    broker.telemetry = otel_export.from_environment(otel)
    install_signal_handlers(broker, reloader)
    reloader.start()
    log.info("serving %d plugins; pid %d", len(broker.snapshot.plugins), os.getpid())
    try:
        broker.run()
    finally:
        close_broker(broker, reloader)
    return 0


def install_signal_handlers(broker: Broker, reloader: Reloader) -> None:
    """SIGTERM and SIGINT stop, SIGHUP reloads. A handler only posts to the loop (a deque append
    and a write to its wake-up pipe): logging, or anything else that takes a lock or writes to a
    stream, from signal context could re-enter what the interrupted code was doing."""
    signal.signal(signal.SIGTERM, lambda *_: broker.stop())
    signal.signal(signal.SIGINT, lambda *_: broker.stop())
    signal.signal(signal.SIGHUP, lambda *_: broker.post(lambda: reloader.request("on SIGHUP")))


def close_broker(broker: Broker, reloader: Reloader) -> None:
    """After :meth:`Broker.run` returned: stop what :func:`build_broker` started, writing
    everything the writers still hold."""
    if broker.metrics_server is not None:
        broker.metrics_server.close()
    reloader.close()
    for group in (broker.deciders, broker.keepers):
        if group is not None:
            group.stop()
    if broker.chains.leases is not None:
        broker.chains.leases.close()  # the leases lapse: another broker takes the runs over
    for writer in (broker.decisions, broker.dead_letters):
        if writer is not None:
            writer.close()
    state.close_store()
    if broker.telemetry is not None:
        broker.telemetry.shutdown()  # the spans still buffered are sent
