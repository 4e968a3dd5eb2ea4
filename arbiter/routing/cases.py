"""Routing test cases (like ``opa test``): a request and the conditions it routes under in,
assertions on the decision out.

A case file is YAML, a list of cases (every key is documented in dsl/REFERENCE.md, "Routing
test cases")::

    - name: fastapi with keycloak          # optional; defaults to the text
      text: Build a FastAPI endpoint with MongoDB and Keycloak auth
      files: [src/api/users.py]           # optional
      from: jira-orchestrator             # optional calling plugin
      unserved: [home-assistant]          # optional: plugins no live worker serves
      circuits: {exec-automator: open}    # optional: circuit states
      expect: fastapi-backend             # the primary plugin, or `none` for "no route"
      also: [other-plugin]                # other acceptable primaries
      collaborators: [lobbi-platform-manager]
      fired: [keycloak-auth-goes-to-platform]
      not_fired: [some-other-rule]
      strategy: sequential_collaboration
      fallbacks: {includes: [jira-orchestrator]}   # or an exact list
      excluded: [some-plugin]             # plugins a rule excluded
      no_route: true                      # same as `expect: none`

A case file is checked before anything routes: unknown keys, wrong types, unknown plugins,
rules and states are findings at ``file:line:col`` (:mod:`arbiter.routing.case_checks`).
By default ``arbiter test`` runs every ``*.test.yaml`` file in the project's ``rules/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from arbiter.dsl.diagnostics import Diagnostic
from arbiter.project.documents import DocumentError, read_document
from arbiter.routing.case_checks import Known, check_case

CASE_GLOB = "*.test.yaml"
NO_ROUTE_WORDS = (None, "none", "null", False)


@dataclass(frozen=True)
class Case:
    """One routing test case: a request, its conditions, and what the decision must show."""

    name: str
    text: str
    expect: str | None  # None: no route expected (when ``checks_primary``)
    files: tuple[str, ...] = ()
    caller: str | None = None
    also: tuple[str, ...] = ()
    collaborators: tuple[str, ...] = ()
    path: str = ""
    line: int = 0
    checks_primary: bool = True  # False: the case asserts other things only
    unserved: tuple[str, ...] = ()
    circuits: Mapping[str, str] = field(default_factory=dict)
    fired: tuple[str, ...] = ()
    not_fired: tuple[str, ...] = ()
    strategy: str | None = None
    fallbacks: tuple[str, ...] | None = None  # exact list, when given
    fallbacks_include: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def case_files(paths: Sequence[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(path.glob(CASE_GLOB)))
        elif path.is_file():
            found.append(path)
    return found


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


def _primary(raw: Mapping[str, Any]) -> tuple[bool, str | None]:
    """Whether the case checks the primary, and the primary it expects (None: no route)."""
    if raw.get("no_route") is True:
        return True, None
    if "expect" not in raw:
        return False, None
    expect = raw["expect"]
    return True, None if expect in NO_ROUTE_WORDS else str(expect)


def _fallbacks(value: Any) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    if isinstance(value, dict):
        return None, _strings(value.get("includes"))
    return (None if value is None else _strings(value)), ()


def make_case(raw: Mapping[str, Any], path: str, line: int) -> Case:
    """A case from its (already checked) mapping."""
    checks, expect = _primary(raw)
    exact, includes = _fallbacks(raw.get("fallbacks"))
    return Case(
        name=str(raw.get("name") or raw["text"]),
        text=raw["text"],
        expect=expect,
        files=_strings(raw.get("files")),
        caller=raw.get("from"),
        also=_strings(raw.get("also")),
        collaborators=_strings(raw.get("collaborators")),
        path=path,
        line=line,
        checks_primary=checks,
        unserved=_strings(raw.get("unserved")),
        circuits={str(k): str(v) for k, v in (raw.get("circuits") or {}).items()},
        fired=_strings(raw.get("fired")),
        not_fired=_strings(raw.get("not_fired")),
        strategy=raw.get("strategy"),
        fallbacks=exact,
        fallbacks_include=includes,
        excluded=_strings(raw.get("excluded")),
    )


def load_cases(paths: Sequence[Path], known: Known | None = None) -> tuple[list[Case], list[Diagnostic]]:
    """Every case of the case files under ``paths``, and the findings about them. ``known``
    (the project's plugins and rules) lets a case naming an unknown one be a finding."""
    cases: list[Case] = []
    problems: list[Diagnostic] = []
    for path in case_files(paths):
        try:
            doc = read_document(path)
        except DocumentError as exc:
            problems.append(Diagnostic(exc.path, exc.line, exc.col, "error", "E050", exc.message, "", exc.source_line))
            continue
        if not isinstance(doc.data, list):
            message = "a case file is a YAML list of cases (each item starts with `- `)"
            problems.append(Diagnostic(str(path), 1, 1, "error", "E050", message, "", doc.line_text(1)))
            continue
        for index, raw in enumerate(doc.data):
            found = check_case(doc, index, raw, known)
            problems.extend(sorted(found, key=lambda d: (d.line, d.col)))
            if not found:
                cases.append(make_case(raw, str(path), doc.where((index,))[0]))
    return cases, problems
