"""``arbiter state``, ``arbiter locks`` and ``arbiter log``: shared state from the command line.

``state`` goes through the broker (``arbiter.state``), so access levels apply and every change
is published; the caller is ``--as NAME`` (the envelope's source). ``locks list`` and ``log``
read the state store directly, so they work while the broker is down. Exit codes: 0 ok, 1 the
operation was refused (NOT_FOUND, CONFLICT, FORBIDDEN, ...) or the broker did not answer, 2 usage.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any, Callable

import click

from arbiter.sdk.client import RequestTimeout
from arbiter.sdk.state import SharedState, StateError
from arbiter.store import events as event_log
from arbiter.store import locks as lock_table

from .common import (
    Context,
    broker_endpoint,
    duration_value,
    echo_json,
    endpoint_option,
    json_option,
    pass_context,
    project_store,
)
from .tables import printable, table

FOLLOW_POLL_S = 0.5


def _value(text: str) -> Any:
    """VALUE as JSON when it parses (``5``, ``true``, ``{"a": 1}``, ``"5"``), else as text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _in_seconds(duration: dt.timedelta | None) -> float | None:
    return None if duration is None else duration.total_seconds()


as_option = click.option(
    "--as",
    "caller",
    default="arbiter-cli",
    show_default=True,
    metavar="NAME",
    help="Who asks (owner of what it creates).",
)
version_option = click.option("--version", "version", type=int, help="Only if the entry is at this version (0: new).")
ttl_option = click.option(
    "--ttl", callback=duration_value, metavar="DURATION", help="Expire after this long (30s, 5m, 1d)."
)
timeout_option = click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for the broker.")


def through_broker(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of every command that goes through the broker: --as, --timeout, --endpoint, --json."""
    for option in reversed((as_option, timeout_option, endpoint_option, json_option)):
        command = option(command)
    return command


def _run(ctx: Context, endpoint: str | None, caller: str, timeout: float, action: Callable[[SharedState], Any]) -> Any:
    state = SharedState.connect(broker_endpoint(ctx, endpoint), caller, timeout)
    try:
        return action(state)
    except StateError as exc:
        current = exc.current
        hint = f" (now at version {current['version']})" if current else ""
        raise click.ClickException(f"{exc}{hint}") from None
    except RequestTimeout as exc:
        raise click.ClickException(f"{exc}") from None
    finally:
        state.close()


def _show_entry(entry: dict[str, Any], as_json: bool) -> None:
    if as_json:
        echo_json(entry)
        return
    if "value" not in entry:
        click.echo(f"{entry['scope']} {entry['key']}: deleted (event {entry.get('seq')})")
        return
    value = json.dumps(entry["value"], ensure_ascii=False)
    expires = f", expires {entry['expiresAt'][:19]}" if entry.get("expiresAt") else ""
    click.echo(printable(value))
    click.echo(
        f"  {entry['scope']} {entry['key']}: version {entry['version']}, {entry['access']}, owner {entry['owner']}"
        f"{expires}",
        err=True,
    )


@click.group("state")
def state() -> None:
    """Shared context through the broker: entries in scopes, with owners, access levels,
    versions and lifetimes. Scopes: global, plugin:NAME, run:ID, session:ID.

    \b
      arbiter state put global release '{"tag": "v2"}' --access protected --as ci
      arbiter state get global release
      arbiter state cas global release '{"tag": "v3"}' --version 1 --as ci
      arbiter state incr plugin:jira-orchestrator tickets --by 2
      arbiter state list global --json
      arbiter state delete global release --as ci
    """


@state.command("get")
@click.argument("scope")
@click.argument("key")
@through_broker
@pass_context
def get_cmd(ctx: Context, scope: str, key: str, caller: str, timeout: float, endpoint: str | None, as_json: bool):
    """Print an entry's value (the version, access and owner go to stderr)."""
    _show_entry(_run(ctx, endpoint, caller, timeout, lambda s: s.get(scope, key)), as_json)


def _put_command(name: str, needs_version: bool) -> None:
    help_text = (
        "Write VALUE (JSON, else text) only over the entry at --version N (0: only if new)."
        if needs_version
        else "Write VALUE (JSON, else text); with --version, only over that version (0: only if new)."
    )

    @state.command(name, help=help_text)
    @click.argument("scope")
    @click.argument("key")
    @click.argument("value")
    @click.option("--version", "version", type=int, required=needs_version, help="The version it must be at.")
    @click.option("--access", type=click.Choice(("public", "protected", "private")), help="Set on creation.")
    @ttl_option
    @through_broker
    @pass_context
    def command(ctx: Context, scope: str, key: str, value: str, version: int | None, access: str | None, **rest: Any):
        ttl, caller, timeout, endpoint, as_json = (rest[k] for k in ("ttl", "caller", "timeout", "endpoint", "as_json"))
        written = _run(
            ctx,
            endpoint,
            caller,
            timeout,
            lambda s: s.put(scope, key, _value(value), version=version, access=access, ttl=_in_seconds(ttl)),
        )
        _show_entry(written, as_json)


_put_command("put", needs_version=False)
_put_command("cas", needs_version=True)


@state.command("delete")
@click.argument("scope")
@click.argument("key")
@version_option
@through_broker
@pass_context
def delete_cmd(ctx: Context, scope: str, key: str, version: int | None, caller: str, timeout: float, **rest: Any):
    """Delete an entry (with --version, only that version of it)."""
    done = _run(ctx, rest["endpoint"], caller, timeout, lambda s: s.delete(scope, key, version=version))
    _show_entry(done, rest["as_json"])


@state.command("incr")
@click.argument("scope")
@click.argument("key")
@click.option("--by", default=1, show_default=True, help="How much to add (negative: subtract).")
@ttl_option
@through_broker
@pass_context
def incr_cmd(
    ctx: Context, scope: str, key: str, by: int, ttl: dt.timedelta | None, caller: str, timeout: float, **rest: Any
):
    """Add to a counter atomically (a missing one starts at 0)."""
    done = _run(ctx, rest["endpoint"], caller, timeout, lambda s: s.incr(scope, key, by, _in_seconds(ttl)))
    _show_entry(done, rest["as_json"])


@state.command("list")
@click.argument("scope")
@click.option("--prefix", help="Only keys that start with this.")
@through_broker
@pass_context
def list_cmd(ctx: Context, scope: str, prefix: str | None, caller: str, timeout: float, **rest: Any):
    """The entries of a scope that --as may read."""
    entries = _run(ctx, rest["endpoint"], caller, timeout, lambda s: s.list(scope, prefix))
    if rest["as_json"]:
        echo_json(entries)
        return
    rows = [
        (e["key"], e["version"], e["access"], e["owner"], json.dumps(e["value"], ensure_ascii=False)) for e in entries
    ]
    _table(("KEY", "VERSION", "ACCESS", "OWNER", "VALUE"), rows, f"no entries in {scope}", {"VALUE": 60})


@click.group("locks")
def locks() -> None:
    """Locks on shared resources: who holds what, in which mode, until when.

    \b
      arbiter locks list
    Locks are taken and released through the broker (the SDK's SharedState.lock); each grant
    draws a fencing token that writes carry, so a holder whose lease ran out cannot write.
    """


@locks.command("list")
@json_option
@pass_context
def locks_list(ctx: Context, as_json: bool) -> None:
    """Live leases, from the state store."""
    with project_store(ctx):
        leases = [lease.to_json() for lease in lock_table.list_leases()]
    if as_json:
        echo_json(leases)
        return
    rows = [(x["resource"], x["mode"], x["holder"], x["token"], x["expiresAt"][:19]) for x in leases]
    _table(("RESOURCE", "MODE", "HOLDER", "TOKEN", "EXPIRES"), rows, "no locks held", {"RESOURCE": 48})


def _table(columns: tuple[str, ...], rows: list[tuple], empty: str, limits: dict[str, int]) -> None:
    if not rows:
        click.echo(empty, err=True)
    for line in table(columns, rows, numeric={"VERSION", "TOKEN"}, limits=limits):
        click.echo(line)


@click.command("log")
@click.option("--since", default=0, show_default=True, help="Events after this sequence number.")
@click.option("--topic", metavar="PATTERN", help="Only these topics: a prefix, or * and ** wildcards.")
@click.option("--last", type=int, help="Only the newest N (after --since).")
@click.option("--follow", is_flag=True, help="Keep printing new events until Ctrl-C.")
@json_option
@pass_context
def log(ctx: Context, since: int, topic: str | None, last: int | None, follow: bool, as_json: bool) -> None:
    """The event log: every state change, lock, chain step, routing decision and circuit change,
    in order, by sequence number. A subscriber that missed events reads them here from the last
    sequence number it saw.

    \b
      arbiter log --last 20
      arbiter log --topic 'state/**' --since 1200 --json
      arbiter log --topic orchestration/ --follow
    """
    with project_store(ctx):
        found = event_log.read(since=since, topic=topic, limit=1_000_000 if last else 1000)
        if last:
            found = found[-last:]
        since = _print_events(found, as_json, since)
        while follow:
            time.sleep(FOLLOW_POLL_S)
            since = _print_events(event_log.read(since=since, topic=topic), as_json, since)


def _print_events(found: list[event_log.LoggedEvent], as_json: bool, since: int) -> int:
    for event in found:
        data = event.to_json()
        if as_json:
            click.echo(json.dumps(data, ensure_ascii=False, default=str))
        else:
            payload = printable(json.dumps(data["payload"], ensure_ascii=False, default=str))[:100]
            click.echo(f"{data['seq']:>8}  {data['at'][:23]}  {printable(data['topic'])}  {payload}")
        since = max(since, event.seq)
    return since
