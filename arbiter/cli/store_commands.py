"""``arbiter store``: look after the state store (decision log, circuit states, dead letters)."""

from __future__ import annotations

import sys

import click

from arbiter.store.check import Report, check_store
from arbiter.store.database import SCHEMA_VERSION

from .common import Context, echo_json, json_option, pass_context
from .tables import printable, table


@click.group("store")
def store() -> None:
    """The state store: the database of configs/state.yaml (decisions, circuits, dead letters).

    \b
      arbiter store check          is it sound? integrity, schema version, tables and rows
      arbiter store check --json
    \b
    When a command says the store is damaged: `arbiter store check` shows what is wrong, and
    README "Recovering the state store" how to keep the bad file and start afresh.
    """


@store.command("check", short_help="Is the state store sound? Read-only; exit 1 when not.")
@json_option
@pass_context
def check(ctx: Context, as_json: bool) -> None:
    """Check the state store without changing it: SQLite's integrity checks (quick_check and
    integrity_check) on the file opened read-only, or a connection to PostgreSQL; the schema
    version; every table with its row count; the size. Reads configs/state.yaml only (plugins
    and rules need not load).

    Exit 0 when the store is sound (or does not exist yet), 1 when it is not.
    """
    sections, _ = ctx.configs()
    report = check_store(str(sections["state"]["database"]), ctx.root)
    if as_json:
        echo_json(report.to_json())
    else:
        for line in render(report):
            click.echo(line)
    sys.exit(0 if report.ok else 1)


def render(report: Report) -> list[str]:
    """The report for people: what the store is, then its tables, then the verdict."""
    lines = [f"state store: {printable(report.location)} ({report.kind})"]
    if not report.exists:
        return [*lines, "does not exist yet: the first command or broker that records creates it"]
    if report.size_bytes is not None:
        wal = f", {_size(report.wal_bytes)} write-ahead log" if report.wal_bytes else ""
        lines.append(f"size: {_size(report.size_bytes)}{wal}")
    if report.schema_version is not None:
        lines.append(f"schema version: {report.schema_version} ({_version_note(report.schema_version)})")
    for check_name, result in report.integrity.items():
        lines.append(f"{check_name}: " + ("ok" if result == ["ok"] else f"{len(result)} finding(s), below"))
    if report.tables:
        rows = [[name, "unreadable" if count is None else count] for name, count in report.tables.items()]
        lines += ["", *table(["TABLE", "ROWS"], rows, numeric={"ROWS"}), ""]
    if report.ok:
        return [*lines, "sound"]
    lines += [f"problem: {printable(problem)}" for problem in report.problems]
    return [*lines, f"what to do: {report.hint}"]


def _version_note(version: int) -> str:
    if version == SCHEMA_VERSION:
        return "current"
    if version == 0:
        return "empty; the tables are created when it is next opened"
    if version < SCHEMA_VERSION:
        return f"older; migrated to {SCHEMA_VERSION} when next opened"
    return f"newer than this Arbiter's {SCHEMA_VERSION}"


def _size(count: int | None) -> str:
    """Bytes for people: 1.2 MiB rather than 1258291."""
    value = float(count or 0)
    if value < 1024:
        return f"{int(value)} bytes"
    for unit in ("KiB", "MiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} GiB"
