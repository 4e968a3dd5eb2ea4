"""``configs/*.yaml``: broker endpoints, state store, routing weights — validated, with defaults.

Each known file name has a schema in :mod:`arbiter.schemas`; a missing file or folder means
defaults, so a project with nothing but plugins still runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from arbiter.dsl.diagnostics import Diagnostic
from arbiter.project.documents import DocumentError, read_document
from arbiter.project.model import freeze
from arbiter.project.schemas import CONFIG_SCHEMAS, validate, validator_for


def defaults() -> dict[str, dict[str, Any]]:
    """Every config section with nothing but its defaults."""
    return {name: validator_for(schema, allow_unknown=False).normalized({}) for name, schema in CONFIG_SCHEMAS.items()}


def config_files(config_dir: Path) -> list[Path]:
    if not config_dir.is_dir():
        return []
    return sorted(p for p in config_dir.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load_configs(config_dir: Path) -> tuple[Mapping[str, Any], tuple[Diagnostic, ...]]:
    """Read and validate every config file; invalid files are reported and their defaults kept."""
    sections = defaults()
    diags: list[Diagnostic] = []
    for path in config_files(config_dir):
        name = path.stem
        if name not in CONFIG_SCHEMAS:
            known = ", ".join(f"{n}.yaml" for n in sorted(CONFIG_SCHEMAS))
            diags.append(
                Diagnostic(str(path), 1, 1, "warning", "W021", f"unknown config file; ignored (known: {known})")
            )
            continue
        try:
            doc = read_document(path)
        except DocumentError as exc:
            diags.append(
                Diagnostic(exc.path, exc.line, exc.col, "error", "E020", exc.message, source_line=exc.source_line)
            )
            continue
        if doc.data is None:
            continue
        data, found = validate(doc, CONFIG_SCHEMAS[name], "E020", "W022")
        diags.extend(found)
        if data is not None and not any(d.severity == "error" for d in found):
            sections[name] = data
    return freeze(sections), tuple(diags)
