"""Checks of meaning across all rule files, on top of syntax.

Codes (also in REFERENCE.md):
  E001 syntax error                         E101 unknown plugin
  E102 unknown command of a plugin          E103 unknown domain
  E104 duplicate name                       E105 invalid state (plugin/circuit)
  E106 rule without actions                 E107 invalid regular expression
  W108 past durable-rules' limits          E301 step refers to a step that has not run
  E302 unknown step                         E303 unknown chain parameter
  E304 saga step without compensation       E305 unknown parameter of a command
  E306 required parameter not given         E307 value of the wrong type for a parameter
  E308 binding regex without a group        E309 chain option the chain's kind does not take
  E109 `after` names no phase               E110 rule requires and excludes one plugin
  E111 strategies in conflict at a priority E112 rules that assert/retract in a loop
  E401 route forbidden by the manifests' ACLs
  W101 unknown context or pattern           W102 unknown strategy
  W201 rule can never fire                  W202 rule shadowed by a higher-priority rule
  W203 fact tested but never asserted       W204 rule without `when` fires on every request
  W205 rule without `because`
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from . import ast, compiler, cycles, engine_limits, lint_parameters, strategy_conflicts
from .diagnostics import Diagnostic, did_you_mean
from .parser import SyntaxProblem
from .plugin_view import CommandView, PluginView
from .satisfiability import conflicts_or_repeats, literal_sets, never, weaker
from .syntax_errors import strip_bom
from .walk import atoms as _atoms
from .walk import branches as _branches
from .walk import cond_values as _cond_values
from .walk import step_values as _step_values

STRATEGIES = ("single_plugin", "sequential_collaboration", "parallel_collaboration", "saga", "broadcast")
PLUGIN_STATES = compiler.HEALTH_STATES + compiler.AVAILABILITY_STATES


def _line(sources: Mapping[str, str], path: str, line: int) -> str:
    lines = strip_bom(sources.get(path, "")).splitlines()
    return lines[line - 1] if 0 < line <= len(lines) else ""


def syntax_diagnostics(path: str, text: str, problems: Sequence[SyntaxProblem]) -> list[Diagnostic]:
    lines = strip_bom(text).splitlines()
    out = []
    for p in problems:
        src = lines[p.line - 1] if 0 < p.line <= len(lines) else ""
        out.append(Diagnostic(path, p.line, p.col, "error", "E001", p.message, p.hint, src))
    return out


@dataclass
class _Checker:
    modules: tuple[ast.Module, ...]
    sources: Mapping[str, str]
    plugins: Mapping[str, PluginView]

    def __post_init__(self) -> None:
        self.out: list[Diagnostic] = []
        decls = [(m.path, d) for m in self.modules for d in m.decls]
        self.decls = decls
        self.domains = {d.name for _, d in decls if isinstance(d, ast.Domain)} | {
            dom for p in self.plugins.values() for dom in p.capabilities.domains
        }
        self.patterns = {d.name for _, d in decls if isinstance(d, ast.Pattern)} | {
            pat for p in self.plugins.values() for pat in p.capabilities.patterns
        }
        self.contexts = {
            c for p in self.plugins.values() for c in (*p.capabilities.contexts, *p.capabilities.integrations)
        }
        self.asserted = {a.target for _, d in decls if isinstance(d, ast.Rule) for a in d.then if a.op == "assert"}
        self.bound: dict[tuple[str, str, str], tuple[str, int]] = {}

    # ------------------------------------------------------------ output
    def report(self, path: str, pos: ast.Pos, severity: str, code: str, message: str, hint: str = "") -> None:
        src = _line(self.sources, path, pos.line)
        self.out.append(Diagnostic(path, pos.line, pos.col, severity, code, message, hint, src))

    def name_pos(self, path: str, line: int, name: str, fallback: ast.Pos) -> ast.Pos:
        """Where ``name`` is written on ``line`` (the parser keeps only the line of some items)."""
        found = re.search(r"(?<![\w:-])" + re.escape(name) + r"(?![\w:-])", _line(self.sources, path, line))
        return ast.Pos(line, found.start() + 1) if found else fallback

    def error(self, path: str, pos: ast.Pos, code: str, message: str, hint: str = "") -> None:
        self.report(path, pos, "error", code, message, hint)

    def plugin_known(self, path: str, pos: ast.Pos, name: str) -> bool:
        if name in self.plugins:
            return True
        self.report(path, pos, "error", "E101", f"unknown plugin '{name}'", did_you_mean(name, self.plugins))
        return False

    def command_of(self, path: str, pos: ast.Pos, plugin: str, name: str) -> CommandView | None:
        """The known plugin's command called ``name``; E102 when it has none."""
        command = self.plugins[plugin].command(name)
        if command is None:
            known = [c.name for c in self.plugins[plugin].commands]
            self.report(path, pos, "error", "E102", f"{plugin} has no command '{name}'", did_you_mean(name, known))
        return command

    # ------------------------------------------------------------ whole program
    def run(self) -> list[Diagnostic]:
        self.check_duplicates()
        for path, decl in self.decls:
            if isinstance(decl, ast.Rule):
                self.check_rule(path, decl)
            elif isinstance(decl, ast.Chain):
                self.check_chain(path, decl)
            elif isinstance(decl, ast.Capabilities):
                self.check_capabilities(path, decl)
            elif isinstance(decl, ast.ParameterBindings):
                self.check_bindings(path, decl)
            elif isinstance(decl, ast.Pattern):
                for regex in decl.regexes:
                    self.check_regex(path, decl.pos, regex)
        self.check_engine_limits()
        self.check_shadowing()
        rules = [(p, d) for p, d in self.decls if isinstance(d, ast.Rule)]
        strategy_conflicts.check(self.report, rules)
        cycles.check(self.report, rules)
        return self.out

    def check_duplicates(self) -> None:
        seen: dict[tuple[str, str], tuple[str, ast.Pos]] = {}
        for path, decl in self.decls:
            if isinstance(decl, (ast.Capabilities, ast.ParameterBindings)):
                continue
            kind = type(decl).__name__.lower()
            key = (kind, decl.name)
            if key in seen:
                first_path, first_pos = seen[key]
                self.report(
                    path,
                    decl.pos,
                    "error",
                    "E104",
                    f"duplicate {kind} name '{decl.name}'",
                    f"first declared at {first_path}:{first_pos.line}",
                )
            else:
                seen[key] = (path, decl.pos)

    # ------------------------------------------------------------ rules
    def check_rule(self, path: str, rule: ast.Rule) -> None:
        if not rule.then:
            self.report(
                path,
                rule.pos,
                "error",
                "E106",
                f"rule '{rule.name}' has no actions",
                "add a `then` clause, e.g. `then prefer some-plugin`",
            )
        if rule.when is None:
            self.report(
                path, rule.pos, "warning", "W204", f"rule '{rule.name}' has no `when`; it fires on every request"
            )
        else:
            for atom in _atoms(rule.when):
                self.check_atom(path, atom)
            if never(rule.when):
                self.report(
                    path,
                    rule.when.pos,
                    "warning",
                    "W201",
                    f"rule '{rule.name}' can never fire: its conditions contradict each other",
                )
        if rule.then and rule.because is None:
            self.report(
                path,
                rule.pos,
                "warning",
                "W205",
                f"rule '{rule.name}' has no `because`: explain has no reason to show for it",
                'add `because "..."`, the reason in words',
            )
        for act in rule.then:
            self.check_action(path, rule, act)
        self.check_require_exclude(path, rule)
        self.check_rule_acls(path, rule)

    def check_require_exclude(self, path: str, rule: ast.Rule) -> None:
        required = {a.target for a in rule.then if a.op == "require"}
        for act in rule.then:
            if act.op == "exclude" and act.target in required:
                self.error(
                    path,
                    act.pos,
                    "E110",
                    f"rule '{rule.name}' both requires and excludes {act.target}",
                    "keep one of the two actions",
                )

    def check_atom(self, path: str, atom: ast.Cond) -> None:
        op, a = atom.op, atom.args
        if op in ("domain", "domain_score") and a[0] not in self.domains:
            self.report(path, atom.pos, "error", "E103", f"unknown domain '{a[0]}'", did_you_mean(a[0], self.domains))
        elif op == "context" and a[0] not in self.contexts:
            self.report(
                path,
                atom.pos,
                "warning",
                "W101",
                f"no plugin declares the context '{a[0]}'",
                did_you_mean(a[0], self.contexts),
            )
        elif op == "pattern" and a[0] not in self.patterns:
            self.report(
                path, atom.pos, "warning", "W101", f"unknown pattern '{a[0]}'", did_you_mean(a[0], self.patterns)
            )
        elif op in ("fact", "fact_cmp") and a[0] not in self.asserted:
            self.report(
                path,
                atom.pos,
                "warning",
                "W203",
                f"no rule asserts the fact '{a[0]}'",
                did_you_mean(a[0], self.asserted) or "a condition on it is never true",
            )
        elif op == "text_matches":
            self.check_regex(path, atom.pos, a[0])
        elif op in ("plugin_is", "circuit_is", "caller_is"):
            if self.plugin_known(path, atom.pos, a[0]) and op != "caller_is":
                allowed = PLUGIN_STATES if op == "plugin_is" else compiler.CIRCUIT_STATES
                if a[1] not in allowed:
                    self.report(
                        path,
                        atom.pos,
                        "error",
                        "E105",
                        f"'{a[1]}' is not a state here",
                        f"use one of: {', '.join(allowed)}",
                    )

    def check_regex(self, path: str, pos: ast.Pos, literal: str) -> None:
        body, flags = compiler.split_regex(literal)
        try:
            re.compile(body)
        except re.error as exc:
            message = f"invalid regular expression {literal}: {exc.msg}"
            self.error(path, pos, "E107", message, "regular expressions use Python syntax")

    def check_action(self, path: str, rule: ast.Rule, act: ast.Action) -> None:
        if act.op in ("prefer", "avoid", "require", "exclude", "collaborate"):
            self.plugin_known(path, act.pos, act.target)
        if act.op == "collaborate" and act.on and act.on not in self.domains:
            self.error(path, act.pos, "E103", f"unknown domain '{act.on}'", did_you_mean(act.on, self.domains))
        phases = self.domains | set(self.plugins)
        for phase in act.after if act.op == "collaborate" else ():
            if phase not in phases:
                line = act.pos.line
                where = self.name_pos(path, line, phase, act.pos)
                hint = did_you_mean(phase, phases) or "a phase is named by its domain (or, without one, its plugin)"
                self.error(path, where, "E109", f"no phase is called '{phase}'", hint)
        if act.op == "strategy" and act.target not in STRATEGIES:
            self.report(
                path,
                act.pos,
                "warning",
                "W102",
                f"unknown strategy '{act.target}'",
                did_you_mean(act.target, STRATEGIES) or f"known: {', '.join(STRATEGIES)}",
            )

    def check_rule_acls(self, path: str, rule: ast.Rule) -> None:
        """A rule that picks plugin A and brings in B must be a route A→B the manifests allow;
        a rule for a known caller must pick plugins that accept that caller."""
        leads = [a.target for a in rule.then if a.op in ("require", "prefer") and a.target in self.plugins]
        for act in rule.then:
            if act.op != "collaborate" or act.target not in self.plugins:
                continue
            for lead in leads:
                refusal = self.refusal(lead, act.target)
                if refusal:
                    self.report(
                        path,
                        act.pos,
                        "error",
                        "E401",
                        refusal,
                        "allow the route in the manifest named above, or drop the collaboration",
                    )
        callers = [a.args[0] for a in _atoms(rule.when) if a.op == "caller_is"] if rule.when else []
        for caller in callers:
            for act in rule.then:
                refusal = self.refusal(caller, act.target) if act.op in ("require", "prefer", "collaborate") else None
                if refusal:
                    self.report(
                        path,
                        act.pos,
                        "error",
                        "E401",
                        f"requests from {caller} may not be routed to {act.target}: {refusal}",
                        "allow the route in the manifest named above, or drop the rule's caller condition",
                    )

    def refusal(self, source: str, target: str) -> str | None:
        """Why the manifests forbid ``source`` to hand work to ``target`` (None: allowed or unknown)."""
        if source not in self.plugins or target not in self.plugins:
            return None
        return self.plugins[source].route_refusal(self.plugins[target])

    def check_engine_limits(self) -> None:
        """Past durable-rules' limits the Python engine runs the program: say so at the rule."""
        located = [(p, d) for p, d in self.decls if isinstance(d, ast.Rule)]
        crossed = engine_limits.crossing([compiler.rule(d, p) for p, d in located])
        if crossed is None:
            return
        path, rule = located[crossed.index]
        self.report(
            path,
            rule.pos,
            "warning",
            "W108",
            f"{crossed.limit} and rule '{rule.name}' is past that: the Python engine runs this program",
            "the results are the same; to keep durable-rules, merge rules that share a condition",
        )

    def check_shadowing(self) -> None:
        """Compare each rule only with higher-priority rules sharing a literal (or with none)."""
        rules = [(p, d, literal_sets(d.when)) for p, d in self.decls if isinstance(d, ast.Rule) and d.when is not None]
        by_literal: dict[Any, set[int]] = {}
        unconditional: set[int] = set()
        for index, (_, _, sets) in enumerate(rules):
            literals = set().union(*sets) if sets else set()
            if sets is not None and any(not s for s in sets):
                unconditional.add(index)
            for literal in literals:
                by_literal.setdefault(literal, set()).add(index)
        for path_b, b, sets_b in rules:
            if sets_b is None:
                continue
            candidates = set(unconditional)
            for literal in set().union(*sets_b) if sets_b else ():
                candidates |= by_literal.get(literal, set())
            for index in sorted(candidates):
                _, a, sets_a = rules[index]
                if a.priority <= b.priority or a.name == b.name or sets_a is None:
                    continue
                if weaker(sets_a, sets_b) and conflicts_or_repeats(a, b):
                    self.report(
                        path_b,
                        b.pos,
                        "warning",
                        "W202",
                        f"rule '{b.name}' is shadowed by '{a.name}' (priority {a.priority} > {b.priority})",
                        f"'{a.name}' fires whenever this rule does and overrides or repeats its actions",
                    )
                    break

    # ------------------------------------------------------------ capabilities and chains
    def check_capabilities(self, path: str, decl: ast.Capabilities) -> None:
        if not self.plugin_known(path, decl.pos, decl.plugin):
            return
        known = self.domains | self.contexts | self.patterns
        for name, _ in decl.weights:
            if name not in known:
                self.report(
                    path,
                    self.name_pos(path, decl.item_lines.get(name, decl.pos.line), name, decl.pos),
                    "warning",
                    "W101",
                    f"'{name}' is not a known domain, context or pattern",
                    did_you_mean(name, known),
                )

    def check_bindings(self, path: str, decl: ast.ParameterBindings) -> None:
        command = None
        if self.plugin_known(path, decl.plugin_pos, decl.plugin):
            command = self.command_of(path, decl.command_pos, decl.plugin, decl.command)
        for item in decl.items:
            for literal, pos in zip(item.regexes, item.regex_pos):
                self.check_regex(path, pos, literal)
        lint_parameters.check_bindings(self.error, path, decl, command, self.bound)

    def check_chain(self, path: str, chain: ast.Chain) -> None:
        if chain.on_failure and chain.kind != "parallel":
            self.error(
                path,
                chain.pos,
                "E309",
                f"'{chain.on_failure}' is for parallel chains; '{chain.name}' is {chain.kind}",
                f"drop it, or write `chain {chain.name} parallel {chain.on_failure}`",
            )
        params = {p.name for p in chain.params}
        all_steps = ast.steps(chain.items)
        names = [s.name for s in all_steps]
        for name, count in Counter(names).items():
            if count > 1:
                step = next(s for s in all_steps if s.name == name)
                self.report(path, step.pos, "error", "E104", f"duplicate step name '{name}' in chain '{chain.name}'")
        done: list[str] = []
        for step in all_steps:
            self.check_step(path, chain, step, params, done, names)
            done.append(step.name)
        for branch in _branches(chain.items):
            for atom in _atoms(branch.cond):
                for value in _cond_values(atom):
                    self.check_value(path, chain, _BRANCH, value, params, names, names, own=True)
        self.check_chain_acls(path, chain, all_steps)

    def check_chain_acls(self, path: str, chain: ast.Chain, all_steps: list[ast.Step]) -> None:
        """A step using another plugin's step result hands data from that plugin to its own."""
        owner = {s.name: s.plugin for s in all_steps}
        for step in all_steps:
            for value in _step_values(step):
                source = owner.get(str(value.value).split(".")[0]) if value.kind == "ref" else None
                refusal = self.refusal(source, step.plugin) if source is not None else None
                if refusal:
                    self.report(
                        path,
                        value.pos,
                        "error",
                        "E401",
                        f"step '{step.name}' passes a result of {source} to {step.plugin}, a route the "
                        f"manifests forbid: {refusal}",
                        "allow the route in the manifest named above",
                    )

    def check_step(
        self, path: str, chain: ast.Chain, step: ast.Step, params: set[str], done: list[str], names: list[str]
    ) -> None:
        if self.plugin_known(path, step.pos, step.plugin):
            command = self.command_of(path, step.pos, step.plugin, step.command)
            compensation = self.command_of(path, step.pos, step.plugin, step.compensate) if step.compensate else None
            lint_parameters.check_step(self.error, path, step, command, compensation)
        if chain.kind == "saga" and not step.compensate:
            self.report(
                path,
                step.pos,
                "error",
                "E304",
                f"saga step '{step.name}' has no compensation",
                "add `compensate <command> [with ...]` to undo it when a later step fails",
            )
        available = [] if chain.kind == "parallel" else done
        for value in _step_values(step):
            self.check_value(path, chain, step, value, params, available, names)
        for _, value in step.compensate_args:  # compensation runs after its step: its result is there
            self.check_value(path, chain, step, value, params, available + [step.name], names, own=True)

    def check_value(
        self,
        path: str,
        chain: ast.Chain,
        step: ast.Step,
        value: ast.Value,
        params: set[str],
        available: list[str],
        names: list[str],
        own: bool = False,
    ) -> None:
        if value.kind == "param" and value.value not in params:
            message = f"chain '{chain.name}' has no parameter '{value.value}'"
            self.error(path, value.pos, "E303", message, did_you_mean(value.value, params))
        if value.kind != "ref":
            return
        target = value.value.split(".")[0]
        if target not in names:
            self.report(path, value.pos, "error", "E302", f"unknown step '{target}'", did_you_mean(target, names))
        elif (target == step.name and not own) or target not in available:
            why = "itself" if target == step.name else f"step '{target}', which has not run yet"
            if chain.kind == "parallel":
                why = f"step '{target}', which runs in parallel with it"
            self.report(
                path,
                value.pos,
                "error",
                "E301",
                f"step '{step.name}' refers to {why} (a cycle)",
                "a step may only use results of steps that finished before it",
            )


_BRANCH = ast.Step("(if)", "", "")


def check_program(
    modules: tuple[ast.Module, ...], sources: Mapping[str, str], plugins: Mapping[str, PluginView]
) -> list[Diagnostic]:
    """Every finding of meaning in a parsed program (syntax findings come from the parser)."""
    return _Checker(modules, sources, plugins).run()
