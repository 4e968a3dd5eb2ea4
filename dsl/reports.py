"""Lint findings rendered for people and for machines: text, JSON, GitHub Actions, SARIF 2.1.0.

Every rendering carries the same span (line, col, end line, end col; the end column exclusive),
so an editor, a CI annotation and a code-scanning alert all underline the same text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from .diagnostics import Diagnostic
from .suppress import known_codes

FORMATS = ("text", "json", "github", "sarif")
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def render(diags: Sequence[Diagnostic], fmt: str, version: str = "") -> str:
    """The findings in format ``fmt`` (one of :data:`FORMATS`), without a trailing newline."""
    if fmt == "json":
        return json.dumps([d.to_json() for d in diags], indent=2, ensure_ascii=False)
    if fmt == "github":
        return "\n".join(github_line(d) for d in diags)
    if fmt == "sarif":
        return json.dumps(sarif(diags, version), indent=2, ensure_ascii=False)
    return "\n".join(d.format() for d in diags)


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_line(d: Diagnostic) -> str:
    """A GitHub Actions workflow command: an annotation on the file, line and columns."""
    level = "error" if d.severity == "error" else "warning"
    props = [f"file={_escape_property(d.path)}"]
    if d.line:
        line, col, end_line, end_col = d.span()
        props += [f"line={line}", f"col={col}", f"endLine={end_line}", f"endColumn={end_col}"]
    props.append(f"title={_escape_property(d.code)}")
    message = d.message + (f" (hint: {d.hint})" if d.hint else "")
    return f"::{level} {','.join(props)}::{_escape_data(message)}"


def _uri(path: str) -> str:
    p = Path(path)
    return p.as_uri() if p.is_absolute() else p.as_posix()


def _result(d: Diagnostic, index: int) -> dict[str, Any]:
    location: dict[str, Any] = {"artifactLocation": {"uri": _uri(d.path)}}
    if d.line:
        line, col, end_line, end_col = d.span()
        location["region"] = {"startLine": line, "startColumn": col, "endLine": end_line, "endColumn": end_col}
    text = d.message + (f" (hint: {d.hint})" if d.hint else "")
    return {
        "ruleId": d.code,
        "ruleIndex": index,
        "level": "error" if d.severity == "error" else "warning",
        "message": {"text": text},
        "locations": [{"physicalLocation": location}],
    }


def sarif(diags: Sequence[Diagnostic], version: str = "") -> dict[str, Any]:
    """One SARIF 2.1.0 log: a run whose tool rules are every lint code, and the findings."""
    described = known_codes()
    codes = sorted({*described, *(d.code for d in diags)})
    rules = [
        {
            "id": code,
            "shortDescription": {"text": described.get(code, code)},
            "help": {"text": "dsl/REFERENCE.md, section Lint codes"},
            "defaultConfiguration": {"level": "error" if code.startswith("E") else "warning"},
        }
        for code in codes
    ]
    driver: dict[str, Any] = {"name": "arbiter-lint", "rules": rules}
    if version:
        driver["version"] = version
    index = {code: i for i, code in enumerate(codes)}
    results = [_result(d, index[d.code]) for d in diags]
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [{"tool": {"driver": driver}, "results": results}]}
