"""What every subcommand shares: the project options, the snapshot, JSON and diagnostics output."""

from __future__ import annotations

import difflib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import click

from arbiter.project.model import Diagnostic
from arbiter.project.snapshot import Snapshot, build_snapshot


@dataclass
class Context:
    """The global options, and the snapshot built from them on first use."""

    root: Path
    plugin_dirs: list[Path] | None = None
    _snapshot: Snapshot | None = field(default=None, repr=False)

    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            self._snapshot = build_snapshot(self.root, self.plugin_dirs)
        return self._snapshot


pass_context = click.make_pass_decorator(Context)


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


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


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
