"""Checking a routing test case before it runs, as lint checks the rules: every finding at
``file:line:col`` with the line, a caret and a "did you mean". A misspelt key or plugin would
otherwise make a case pass for the wrong reason (an assertion nobody reads) or fail confusingly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from arbiter.dsl.diagnostics import Diagnostic, did_you_mean
from arbiter.dsl.lint import STRATEGIES
from arbiter.project.documents import Document, KeyPath

CODE = "E050"
CIRCUIT_STATES = ("closed", "open", "half-open")
CASE_STRATEGIES = (*STRATEGIES, "none")  # "none": the strategy of a no-route answer
PLUGIN_LISTS = ("also", "collaborators", "unserved", "excluded")
RULE_LISTS = ("fired", "not_fired")
STRING_LISTS = ("files", *PLUGIN_LISTS, *RULE_LISTS)
KEYS = (
    "name",
    "text",
    "files",
    "from",
    "unserved",
    "circuits",
    "expect",
    "also",
    "no_route",
    "collaborators",
    "fired",
    "not_fired",
    "strategy",
    "fallbacks",
    "excluded",
)
ASSERTIONS = ("expect", "no_route", "collaborators", "fired", "not_fired", "strategy", "fallbacks", "excluded")


@dataclass(frozen=True)
class Known:
    """The names a case may use: the project's plugins and rules."""

    plugins: frozenset[str]
    rules: frozenset[str]


class _Report:
    """Findings about one case, each placed at the key path it is about."""

    def __init__(self, doc: Document, index: int):
        self.doc, self.index, self.found = doc, index, []  # type: ignore[var-annotated]

    def add(self, keypath: KeyPath, message: str, hint: str = "") -> None:
        line, col = self.doc.where((self.index, *keypath))
        self.found.append(Diagnostic(self.doc.path, line, col, "error", CODE, message, hint, self.doc.line_text(line)))


def _is_strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _check_names(
    report: _Report, keypath: KeyPath, names: Iterable[tuple[KeyPath, str]], kind: str, known: frozenset[str]
) -> None:
    for where, name in names:
        if name not in known:
            report.add((*keypath, *where), f"unknown {kind} '{name}'", did_you_mean(name, known))


def _listed(value: Any) -> list[tuple[KeyPath, str]]:
    """The strings of a list with their index (a wrong type is reported apart)."""
    return [((i,), v) for i, v in enumerate(value) if isinstance(v, str)] if isinstance(value, list) else []


def _check_keys(report: _Report, raw: Mapping[str, Any]) -> None:
    for key in raw:
        if key not in KEYS:
            hint = did_you_mean(str(key), KEYS) or f"a case takes: {', '.join(KEYS)}"
            report.add((key,), f"unknown key '{key}' in a test case", hint)
    if not isinstance(raw.get("text"), str) or not raw.get("text", "").strip():
        report.add(("text",) if "text" in raw else (), "a case needs `text`: the request, a non-empty string")
    if not any(key in raw for key in ASSERTIONS):
        report.add((), "a case asserts nothing", f"give one of: {', '.join(ASSERTIONS)}")


def _check_types(report: _Report, raw: Mapping[str, Any]) -> None:
    for key in STRING_LISTS:
        if key in raw and not _is_strings(raw[key]):
            report.add((key,), f"`{key}` must be a list of strings, e.g. {key}: [a, b]")
    for key in ("name", "from", "strategy"):
        if key in raw and not isinstance(raw[key], str):
            report.add((key,), f"`{key}` must be a string")
    if "no_route" in raw and not isinstance(raw["no_route"], bool):
        report.add(("no_route",), "`no_route` must be true or false")
    if raw.get("no_route") is True and raw.get("expect") not in (None, "none", "null", False):
        report.add(("no_route",), "`no_route: true` contradicts `expect`", "keep one of them")
    if "expect" in raw and not isinstance(raw["expect"], (str, type(None), bool)):
        report.add(("expect",), "`expect` must be a plugin name or `none`")
    fallbacks = raw.get("fallbacks")
    if "fallbacks" in raw and not _is_strings(fallbacks):
        if not isinstance(fallbacks, dict) or set(fallbacks) != {"includes"} or not _is_strings(fallbacks["includes"]):
            report.add(("fallbacks",), "`fallbacks` must be a list of plugins or {includes: [plugins]}")
    circuits = raw.get("circuits")
    if "circuits" in raw and not isinstance(circuits, dict):
        report.add(("circuits",), "`circuits` must map plugins to a state, e.g. {home-assistant: open}")
    for plugin, state in (circuits or {}).items() if isinstance(circuits, dict) else ():
        if state not in CIRCUIT_STATES:
            hint = did_you_mean(str(state), CIRCUIT_STATES) or f"one of: {', '.join(CIRCUIT_STATES)}"
            report.add(("circuits", plugin), f"unknown circuit state '{state}' for {plugin}", hint)
    strategy = raw.get("strategy")
    if isinstance(strategy, str) and strategy not in CASE_STRATEGIES:
        hint = did_you_mean(strategy, CASE_STRATEGIES) or f"one of: {', '.join(CASE_STRATEGIES)}"
        report.add(("strategy",), f"unknown strategy '{strategy}'", hint)


def _plugin_names(raw: Mapping[str, Any]) -> list[tuple[KeyPath, str]]:
    """Every plugin a case names, with where it names it."""
    named: list[tuple[KeyPath, str]] = []
    for key in ("from", "expect"):
        value = raw.get(key)
        if isinstance(value, str) and not (key == "expect" and value in ("none", "null")):
            named.append(((key,), value))
    for key in PLUGIN_LISTS:
        named.extend(((key, *where), name) for where, name in _listed(raw.get(key)))
    fallbacks = raw.get("fallbacks")
    listed = fallbacks.get("includes") if isinstance(fallbacks, dict) else fallbacks
    prefix: KeyPath = ("fallbacks", "includes") if isinstance(fallbacks, dict) else ("fallbacks",)
    named.extend(((*prefix, *where), name) for where, name in _listed(listed))
    circuits = raw.get("circuits")
    named.extend((("circuits", p), str(p)) for p in (circuits if isinstance(circuits, dict) else ()))
    return named


def _check_names_known(report: _Report, raw: Mapping[str, Any], known: Known) -> None:
    _check_names(report, (), _plugin_names(raw), "plugin", known.plugins)
    for key in RULE_LISTS:
        _check_names(report, (key,), _listed(raw.get(key)), "rule", known.rules)


CHECKS: tuple[Callable[[_Report, Mapping[str, Any]], None], ...] = (_check_keys, _check_types)


def check_case(doc: Document, index: int, raw: Any, known: Known | None) -> list[Diagnostic]:
    """The findings about case ``index`` of ``doc`` (none: it can run)."""
    report = _Report(doc, index)
    if not isinstance(raw, dict):
        report.add((), "a case is a mapping with `text` and what to expect, e.g. {text: ..., expect: PLUGIN}")
        return report.found
    for check in CHECKS:
        check(report, raw)
    if known is not None:
        _check_names_known(report, raw, known)
    return report.found
