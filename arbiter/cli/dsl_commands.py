"""``arbiter lint`` and ``arbiter fmt``: the rule author's daily tools."""

from __future__ import annotations

from pathlib import Path

import click

from arbiter.dsl.formatter import FormatError, format_source
from arbiter.dsl.program import lint as lint_rules
from arbiter.dsl.program import read_source, rule_files
from arbiter.project.plugins import load_plugins

from .common import Context, echo_json, pass_context

paths_argument = click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))


def _targets(ctx: Context, paths: tuple[Path, ...]) -> list[Path]:
    return list(paths) or [ctx.root / "rules"]


@click.command()
@paths_argument
@click.option("--format", "fmt_", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_context
def lint(ctx: Context, paths: tuple[Path, ...], fmt_: str) -> None:
    """Check rule files for errors of syntax and meaning.

    PATHS are .arb files or folders (default: ROOT/rules). All files are checked together, as
    one program, against the project's plugins: unknown plugins, commands and domains (with
    "did you mean"), duplicate names, rules that can never fire or are shadowed, chain cycles,
    saga steps without compensation, routes the manifests' ACLs forbid.

    Exit status: 0 no errors (warnings allowed), 1 errors, 2 usage error.
    """
    plugins, _ = load_plugins(ctx.plugin_dirs or [ctx.root / "plugins"])
    diags = lint_rules(_targets(ctx, paths), {p.name: p for p in plugins})
    errors = [d for d in diags if d.severity == "error"]
    if fmt_ == "json":
        echo_json([d.to_json() for d in diags])
    else:
        for diag in diags:
            click.echo(diag.format())
        files = len(rule_files(_targets(ctx, paths)))
        click.echo(f"{files} file(s) checked: {len(errors)} error(s), {len(diags) - len(errors)} warning(s)", err=True)
    raise SystemExit(1 if errors else 0)


@click.command()
@paths_argument
@click.option("--check", is_flag=True, help="Change nothing; list files that are not formatted and exit 1.")
@pass_context
def fmt(ctx: Context, paths: tuple[Path, ...], check: bool) -> None:
    """Rewrite rule files in canonical layout, keeping comments.

    A file that does not parse is left untouched and reported (exit 1): run `arbiter lint`.
    """
    changed, failed = [], []
    for path in rule_files(_targets(ctx, paths)):
        text, problem = read_source(path)
        if problem is not None or text is None:
            failed.append(problem.format() if problem else str(path))
            continue
        try:
            new = format_source(text, str(path))
        except FormatError as exc:
            failed.append(f"{exc} (not formatted)")
            continue
        if new != text:
            changed.append(path)
            if not check:
                path.write_text(new, encoding="utf-8")
    for line in failed:
        click.echo(line, err=True)
    verb = "would reformat" if check else "reformatted"
    for path in changed:
        click.echo(f"{verb} {path}")
    raise SystemExit(1 if failed or (check and changed) else 0)
