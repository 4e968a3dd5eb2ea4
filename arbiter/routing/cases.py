"""Routing test cases (like ``opa test``): request in, expected plugin out.

A case file is YAML, a list of cases::

    - name: fastapi with keycloak          # optional; defaults to the text
      text: Build a FastAPI endpoint with MongoDB and Keycloak auth
      files: [src/api/users.py]           # optional
      from: jira-orchestrator             # optional calling plugin
      expect: fastapi-backend             # the primary plugin, or `none` for "no route"
      also: [other-plugin]                # optional: other acceptable primaries
      collaborators: [lobbi-platform-manager]   # optional: must appear in the plan

By default ``arbiter test`` runs every ``*.test.yaml`` file in the project's ``rules/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from arbiter.dsl.diagnostics import Diagnostic
from arbiter.project.documents import DocumentError, read_document

CASE_GLOB = "*.test.yaml"


@dataclass(frozen=True)
class Case:
    name: str
    text: str
    expect: str | None  # None: no route expected
    files: tuple[str, ...] = ()
    caller: str | None = None
    also: tuple[str, ...] = ()
    collaborators: tuple[str, ...] = ()
    path: str = ""
    line: int = 0


@dataclass(frozen=True)
class Outcome:
    case: Case
    passed: bool
    primary: str | None
    collaborators: tuple[str, ...]
    message: str = ""


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


def _case(raw: Any, path: Path, line: int) -> Case | Diagnostic:
    if not isinstance(raw, dict) or not isinstance(raw.get("text"), str) or "expect" not in raw:
        return Diagnostic(str(path), line, 1, "error", "E050", "a case needs `text` (a string) and `expect`")
    expect = raw["expect"]
    expected = None if expect in (None, "none", "null", False) else str(expect)
    return Case(
        name=str(raw.get("name") or raw["text"]),
        text=raw["text"],
        expect=expected,
        files=_strings(raw.get("files")),
        caller=raw.get("from"),
        also=_strings(raw.get("also")),
        collaborators=_strings(raw.get("collaborators")),
        path=str(path),
        line=line,
    )


def load_cases(paths: Sequence[Path]) -> tuple[list[Case], list[Diagnostic]]:
    cases: list[Case] = []
    problems: list[Diagnostic] = []
    for path in case_files(paths):
        try:
            doc = read_document(path)
        except DocumentError as exc:
            problems.append(Diagnostic(exc.path, exc.line, exc.col, "error", "E050", exc.message, exc.source_line))
            continue
        items = doc.data if isinstance(doc.data, list) else []
        if not isinstance(doc.data, list):
            problems.append(Diagnostic(str(path), 1, 1, "error", "E050", "a case file is a YAML list of cases"))
        for index, raw in enumerate(items):
            made = _case(raw, path, doc.where((index,))[0])
            (problems if isinstance(made, Diagnostic) else cases).append(made)  # type: ignore[arg-type]
    return cases, problems


RouteFn = Callable[[Case], tuple[str | None, tuple[str, ...]]]


def judge(case: Case, primary: str | None, collaborators: tuple[str, ...]) -> Outcome:
    ok_primary = primary == case.expect or (primary is not None and primary in case.also)
    missing = [c for c in case.collaborators if c not in collaborators]
    message = ""
    if not ok_primary:
        message = f"expected {case.expect or 'no route'}, got {primary or 'no route'}"
    elif missing:
        message = f"missing collaborators: {', '.join(missing)}"
    return Outcome(case, ok_primary and not missing, primary, collaborators, message)


def run_cases(cases: Iterable[Case], route: RouteFn) -> list[Outcome]:
    return [judge(case, *route(case)) for case in cases]
