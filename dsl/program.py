"""All ``rules/*.arb`` of a project as one program, compiled, with every finding located.

Meaning of several files: every ``.arb`` file of the rules folder is read, in file-name order,
and they form one program — a rule may prefer a plugin, use a domain or call a chain step
declared in any file. Names (rules, chains, domains, patterns) are global and must be unique.

This is the entry point of the language: :func:`load_rules` for the project snapshot, :func:`lint`
for ``arbiter lint``. Both run the parser and :mod:`.lint`'s checks, which import nothing back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import ast, compiler, ir
from .bindings import Binding, BindingKey, compile_bindings
from .chains import ChainPlan, compile_chain
from .diagnostics import Diagnostic
from .lint import check_program, syntax_diagnostics
from .parser import parse
from .plugin_view import PluginView
from .suppress import apply_severities, apply_suppressions, suppressions


@dataclass(frozen=True)
class RulesBundle:
    modules: tuple[ast.Module, ...] = ()
    ruleset: ir.RuleSet = ir.RuleSet(())
    vocabulary: Mapping[str, Any] = field(default_factory=lambda: {"domains": {}, "patterns": {}})
    capability_weights: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    chains: Mapping[str, ChainPlan] = field(default_factory=dict)
    diagnostics: tuple[Diagnostic, ...] = ()
    # every command's parameters and where a routed request's text gives them (routing.parameters.bind)
    bindings: Mapping[BindingKey, tuple[Binding, ...]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)

    @property
    def hash(self) -> str:
        return self.ruleset.hash


def rule_files(paths: Sequence[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(path.glob("*.arb")))
        elif path.is_file():
            found.append(path)
    return found


def read_source(path: Path, exact: bool = False) -> tuple[str | None, Diagnostic | None]:
    """The file's text; ``exact`` keeps its line endings as written (``\r\n`` stays)."""
    try:
        with path.open(encoding="utf-8", newline="" if exact else None) as handle:
            return handle.read(), None
    except UnicodeDecodeError as exc:
        return None, Diagnostic(str(path), 1, exc.start + 1, "error", "E001", "file is not valid UTF-8")
    except OSError as exc:
        return None, Diagnostic(str(path), 1, 1, "error", "E001", f"cannot read file: {exc.strerror}")


def load_rules(paths: Sequence[Path], plugins: Mapping[str, PluginView]) -> RulesBundle:
    """Parse, check and compile every rule file under ``paths``. Never raises on bad input."""
    files = rule_files([Path(p) for p in paths])
    digest = hashlib.sha256()
    modules: list[ast.Module] = []
    sources: dict[str, str] = {}
    diags: list[Diagnostic] = []
    for path in files:
        text, problem = read_source(path)
        if problem:
            diags.append(problem)
            continue
        assert text is not None
        digest.update(str(path.name).encode() + b"\0" + text.encode())
        module, problems = parse(text, str(path))
        sources[str(path)] = text
        diags.extend(syntax_diagnostics(str(path), text, problems))
        modules.append(module)
    program = tuple(modules)
    diags.extend(check_program(program, sources, plugins))
    rules = tuple(compiler.rule(d, m.path) for m in program for d in m.decls if isinstance(d, ast.Rule))
    chains = {d.name: compile_chain(d, m.path) for m in program for d in m.decls if isinstance(d, ast.Chain)}
    return RulesBundle(
        modules=program,
        ruleset=ir.RuleSet(rules, digest.hexdigest()),
        vocabulary=compiler.vocabulary(program),
        capability_weights=compiler.capability_weights(program),
        chains=chains,
        diagnostics=tuple(diags),
        bindings=compile_bindings(program, plugins),
    )


def program_files(requested: Sequence[Path], rules_dir: Path | None) -> list[Path]:
    """The files that form the program ``requested`` belongs to: every ``.arb`` file of the
    project's rules folder (a requested one in its place, as it was named), then any other."""
    project = rule_files([rules_dir]) if rules_dir is not None and rules_dir.is_dir() else []
    named = {p.resolve(): p for p in requested}
    files = [named.pop(p.resolve(), p) for p in project]
    return files + [p for p in requested if p.resolve() in named]


def lint(
    paths: Sequence[Path],
    plugins: Mapping[str, PluginView],
    rules_dir: Path | None = None,
    severity: Mapping[str, str] | None = None,
) -> list[Diagnostic]:
    """Every finding for the rule files under ``paths``, sorted by file and position.

    With ``rules_dir`` the files are judged within the project's whole program (names declared in
    its other files are known), and only their own findings are reported. Inline suppressions
    apply, then ``severity`` (code -> error|warning|off, from configs/lint.yaml).
    """
    requested = rule_files([Path(p) for p in paths])
    bundle = load_rules(program_files(requested, rules_dir), plugins)
    wanted = {str(p) for p in requested}
    modules = {m.path: m for m in bundle.modules}
    found: list[Diagnostic] = []
    off = [code for code, level in (severity or {}).items() if level == "off"]
    for path in wanted:
        diags = [d for d in bundle.diagnostics if d.path == path]
        text, _ = read_source(Path(path))
        if path in modules and text is not None:
            diags = apply_suppressions(diags, path, suppressions(text, modules[path].comments), off)
        found.extend(diags)
    found = apply_severities(found, severity or {})
    return sorted(found, key=lambda d: (d.path, d.line, d.col, d.code))
