"""What every subcommand shares: the project options, the snapshot, JSON and diagnostics output."""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import click

from arbiter.dsl.diagnostics import Diagnostic
from arbiter.dsl.durations import parse_timedelta as parse_duration
from arbiter.project.configs import load_configs
from arbiter.project.schemas import CONFIG_SCHEMAS
from arbiter.project.snapshot import Project, Snapshot, build_snapshot
from arbiter.store import database as state


@dataclass
class Context:
    """The global options, and the snapshot built from them on first use."""

    root: Path
    plugin_dirs: list[Path] | None = None
    _snapshot: Snapshot | None = field(default=None, repr=False)
    _configs: tuple[Mapping[str, Any], tuple[Diagnostic, ...]] | None = field(default=None, repr=False)

    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            self._snapshot = build_snapshot(self.root, self.plugin_dirs)
        return self._snapshot

    def configs(self) -> tuple[Mapping[str, Any], tuple[Diagnostic, ...]]:
        """configs/*.yaml with defaults, and their problems: without loading plugins or rules, so a
        command that only talks to the broker starts fast."""
        if self._configs is None:
            self._configs = load_configs(Project(self.root).config_dir)
        return self._configs


pass_context = click.make_pass_decorator(Context)


class StoreProblem(click.ClickException):
    """A state store that cannot be opened or read: one line on stderr, exit 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class ArbiterGroup(click.Group):
    """The ``arbiter`` group. A store that cannot be opened or read ends any command with one line
    naming it and what to do (:class:`state.StoreError`), whichever command found out and whether
    on opening it or on reading a damaged page later: never a driver's traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            failure = state.store_failure(exc)
            if failure is None:
                raise
            raise StoreProblem(str(failure)) from None


def project_options(command: Any) -> Any:
    """``--root`` and ``--plugins-dir``: which project a command reads."""
    command = click.option(
        "--plugins-dir",
        "plugin_dirs",
        multiple=True,
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        help="Read plugins from here instead of ROOT/plugins (repeatable). A directory may be one "
        "plugin or a folder of plugins.",
    )(command)
    return click.option(
        "--root",
        type=click.Path(file_okay=False, path_type=Path),
        default=".",
        show_default=True,
        help="Project directory holding rules/, plugins/ and configs/.",
    )(command)


_ENDPOINT_ROLES = {
    "frontend": "The broker's frontend, where clients and workers connect",
    "events_sub": "The broker's event endpoint for subscribers",
}


def default_endpoint(which: str = "frontend") -> str:
    """The endpoint a project without configs/broker.yaml uses (from the config schema)."""
    return str(CONFIG_SCHEMAS["broker"]["endpoints"]["schema"][which]["default"])


def broker_endpoint_option(which: str = "frontend", help_: str | None = None) -> Callable[[Any], Any]:
    """``--endpoint URL``, with a help text that says where the default comes from."""
    role = help_ or _ENDPOINT_ROLES[which]
    return click.option(
        "--endpoint",
        metavar="URL",
        help=f"{role}. Default: endpoints.{which} of configs/broker.yaml, else {default_endpoint(which)}.",
    )


endpoint_option = broker_endpoint_option()
events_endpoint_option = broker_endpoint_option("events_sub")


def broker_endpoint(ctx: Context, endpoint: str | None, which: str = "frontend") -> str:
    """``--endpoint`` if given, else the project's configs/broker.yaml, else the default: one rule
    for every command that talks to the broker, so they all find the same one."""
    if endpoint:
        return endpoint
    sections, problems = ctx.configs()
    if any(p.severity == "error" and Path(p.path).stem == "broker" for p in problems):
        click.echo(
            f"note: configs/broker.yaml has errors (`arbiter check-config` shows them); using the default {which}",
            err=True,
        )
    configured = (sections.get("broker") or {}).get("endpoints") or {}
    return str(configured.get(which) or default_endpoint(which))


@contextlib.contextmanager
def project_store(ctx: Context) -> Iterator[None]:
    """The project's state store (configs/state.yaml), closed again when the command ends."""
    snap = ctx.snapshot()
    state.open_store(snap.configs["state"]["database"], snap.project.root)
    try:
        yield
    finally:
        state.close_store()


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def duration_value(ctx: click.Context, param: click.Parameter, value: str | None) -> dt.timedelta | None:
    """The callback of a DURATION option (``--older-than 7d``, ``--ttl 30s``): one reading for
    every command, and a text that is not a duration is a usage error naming the option."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def summarize_diagnostics(snapshot: Snapshot) -> None:
    """One stderr line about load problems, so listings stay readable on messy ecosystems."""
    errors = len(snapshot.errors)
    warnings = len(snapshot.diagnostics) - errors
    if errors or warnings:
        click.echo(
            f"note: {errors} error(s), {warnings} warning(s) while loading; `arbiter check-config` shows them",
            err=True,
        )


def print_diagnostics(diags: Iterable[Diagnostic]) -> None:
    for diag in diags:
        click.echo(diag.format(), file=sys.stdout)


def unknown_name(kind: str, name: str, known: Iterable[str]) -> click.UsageError:
    """A usage error (exit 2) with a "did you mean" when a name is close to a known one."""
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return click.UsageError(f"no {kind} named '{name}'.{hint}")
