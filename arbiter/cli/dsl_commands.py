"""``arbiter lint`` and ``arbiter fmt``: the rule author's daily tools, at the desk and in CI."""

from __future__ import annotations

import difflib
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

import click

from arbiter import __version__
from arbiter.dsl.diagnostics import Diagnostic
from arbiter.dsl.formatter import FormatError, format_source
from arbiter.dsl.program import lint as lint_rules
from arbiter.dsl.program import read_source, rule_files
from arbiter.dsl.reports import FORMATS, render
from arbiter.dsl.suppress import at_or_above
from arbiter.project.configs import load_configs
from arbiter.project.plugins import load_plugins

from .common import Context, pass_context

paths_argument = click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))


def find_root(start: Path) -> Path | None:
    """The nearest folder at or above ``start`` holding ``rules/`` or ``configs/``: its project."""
    here = start.resolve()
    for folder in [here if here.is_dir() else here.parent, *here.parents]:
        if (folder / "rules").is_dir() or (folder / "configs").is_dir():
            return folder
    return None


def _explicit_root(ctx: Context) -> Path | None:
    """``--root`` when it was given on the command line (it then wins over discovery)."""
    click_ctx = click.get_current_context()
    parent = click_ctx.find_root()
    if parent.get_parameter_source("root") == click.core.ParameterSource.COMMANDLINE:
        return ctx.root
    return None


def _check_rule_files(paths: tuple[Path, ...]) -> None:
    for path in paths:
        if path.is_file() and path.suffix != ".arb":
            raise click.UsageError(f"{path} is not a rule file: only .arb files are read (name the file or its folder)")


def projects(ctx: Context, paths: tuple[Path, ...]) -> dict[Path, list[Path]]:
    """The paths to read, grouped by the project each belongs to (default: the project's rules/)."""
    _check_rule_files(paths)
    explicit = _explicit_root(ctx)
    if not paths:
        root = explicit or find_root(Path.cwd()) or ctx.root
        return {root: [root / "rules"]}
    groups: dict[Path, list[Path]] = defaultdict(list)
    for path in paths:
        groups[explicit or find_root(path) or ctx.root].append(path)
    return dict(groups)


def _lint_settings(root: Path) -> tuple[Mapping[str, Any], list[Diagnostic]]:
    sections, problems = load_configs(root / "configs")
    return sections["lint"], [p for p in problems if Path(p.path).stem == "lint"]


def _lint_project(ctx: Context, root: Path, paths: list[Path]) -> tuple[list[Diagnostic], str]:
    plugins, _ = load_plugins(ctx.plugin_dirs or [root / "plugins"])
    settings, problems = _lint_settings(root)
    diags = lint_rules(paths, {p.name: p for p in plugins}, root / "rules", settings["severity"])
    return problems + diags, settings["fail_level"]


@click.command()
@paths_argument
@click.option(
    "--format",
    "fmt_",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="text: file:line:col, caret, hint. json: a list with end positions. github: GitHub Actions "
    "annotations. sarif: SARIF 2.1.0 for code scanning.",
)
@click.option(
    "--fail-level",
    type=click.Choice(["error", "warning"]),
    help="Exit 1 when a finding at this level or above remains. Default: fail_level of configs/lint.yaml, else error.",
)
@pass_context
def lint(ctx: Context, paths: tuple[Path, ...], fmt_: str, fail_level: str | None) -> None:
    """Check rule files for errors of syntax and meaning.

    PATHS are .arb files or folders (default: the project's rules/). Each path is judged within
    its project, found by walking up to the nearest folder holding rules/ or configs/ (--root,
    when given, wins): all its rule files form one program, checked against its plugins, and the
    findings of the named files are shown. Only .arb files are read.

    \b
    Silence one finding on its line, or on the line above it:
      rule catch-all {  # arbiter: ignore[W204,W205]
    Change a code's severity, or turn it off, in configs/lint.yaml:
      severity: {W205: error, W101: off}

    Exit status: 0 nothing at the fail level, 1 findings at or above it, 2 usage error.
    """
    diags: list[Diagnostic] = []
    levels: list[str] = []
    checked = 0
    for root, group in projects(ctx, paths).items():
        found, configured = _lint_project(ctx, root, group)
        diags.extend(found)
        levels.append(fail_level or configured)
        checked += len(rule_files(group))
    failing = at_or_above(diags, min(levels, key=["warning", "error"].index) if levels else "error")
    output = render(diags, fmt_, __version__)
    if output:
        click.echo(output)
    if fmt_ in ("text", "github"):
        errors = sum(d.severity == "error" for d in diags)
        click.echo(f"{checked} file(s) checked: {errors} error(s), {len(diags) - errors} warning(s)", err=True)
    raise SystemExit(1 if failing else 0)


def _diff(path: Path, old: str, new: str) -> str:
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), f"{path}", f"{path} (formatted)"
    )
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


@click.command()
@paths_argument
@click.option("--check", is_flag=True, help="Change nothing; list the files that would change and exit 1 if any.")
@click.option("--diff", "show_diff", is_flag=True, help="Change nothing; print a unified diff of what would change.")
@pass_context
def fmt(ctx: Context, paths: tuple[Path, ...], check: bool, show_diff: bool) -> None:
    """Rewrite rule files in canonical layout, keeping the author's structure.

    PATHS are .arb files or folders (default: the project's rules/). Comments stay where they
    were (trailing ones on their line, inside their block); conditions written over several
    lines stay so; CRLF files stay CRLF. Formatting never changes what a file means, and a
    formatted file formats to itself.

    A file that does not parse is left untouched and reported: run `arbiter lint`.

    Exit status: 0 done (or nothing to change), 1 a file would change (--check, --diff) or does
    not parse, 2 usage error.
    """
    files = [f for group in projects(ctx, paths).values() for f in rule_files(group)]
    changed, failed = [], []
    for path in files:
        text, problem = read_source(path, exact=True)
        if problem is not None or text is None:
            failed.append(problem.format() if problem else str(path))
            continue
        try:
            new = format_source(text, str(path))
        except FormatError as exc:
            failed.append(f"{exc} (not formatted)")
            continue
        if new == text:
            continue
        changed.append(path)
        if show_diff:
            click.echo(_diff(path, text, new), nl=False)
        elif not check:
            path.write_bytes(new.encode("utf-8"))
    for line in failed:
        click.echo(line, err=True)
    dry = check or show_diff
    for path in changed:
        click.echo(f"{'would reformat' if dry else 'reformatted'} {path}", err=show_diff)
    raise SystemExit(1 if failed or (dry and changed) else 0)
