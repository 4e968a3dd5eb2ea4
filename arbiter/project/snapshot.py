"""One immutable snapshot of a project: plugins, their parts, configs and compiled rules.

:func:`build_snapshot` is the only way to make one; everything downstream (CLI, pipeline,
broker) reads a snapshot and never the files. A reload builds a new snapshot and swaps a
single reference, so a request keeps the snapshot it started with.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

import yaml

from arbiter.dsl.diagnostics import Diagnostic
from arbiter.dsl.program import RulesBundle, load_rules
from arbiter.project.configs import config_files, load_configs
from arbiter.project.model import Component, Plugin
from arbiter.project.plugins import discover, load_plugins


@dataclass(frozen=True)
class Project:
    """Where a project's inputs live. ``plugin_dirs`` replaces ``root/plugins`` when given."""

    root: Path
    plugin_dirs: tuple[Path, ...] = ()

    @property
    def plugins(self) -> tuple[Path, ...]:
        return self.plugin_dirs or (self.root / "plugins",)

    @property
    def rules_dir(self) -> Path:
        return self.root / "rules"

    @property
    def config_dir(self) -> Path:
        return self.root / "configs"

    @property
    def state_dir(self) -> Path:
        return self.root / ".arbiter"

    def watched(self) -> tuple[Path, ...]:
        """The directories whose files are inputs: rules, configs, plugins, and those holding the
        key files ``configs/security.yaml`` names."""
        folders = {path.parent for path in key_files(self)}
        return (self.rules_dir, self.config_dir, *self.plugins, *sorted(folders))


def key_files(project: Project) -> list[Path]:
    """The CURVE key files ``configs/security.yaml`` names (the broker's secret key, each
    identity's public key), read leniently: they are inputs, so a key file replaced alone is a
    change that a reload serves, and the file's own checks are check-config's business."""
    path = next((p for p in config_files(project.config_dir) if p.stem == "security"), None)
    try:
        data = yaml.safe_load(path.read_text()) if path is not None else None
    except (OSError, yaml.YAMLError):
        return []
    if not isinstance(data, dict):
        return []
    named = [(data.get("curve") or {}).get("secret_key_file") if isinstance(data.get("curve"), dict) else None]
    identities = data.get("identities") if isinstance(data.get("identities"), dict) else {}
    named += [i.get("public_key_file") for i in identities.values() if isinstance(i, dict)]
    return sorted({project.root / name for name in named if isinstance(name, str) and name})


@dataclass(frozen=True)
class Snapshot:
    project: Project
    plugins: Mapping[str, Plugin]
    configs: Mapping[str, Any]
    rules: RulesBundle
    diagnostics: tuple[Diagnostic, ...]
    fingerprint: str
    built_at: float = field(default_factory=time.time)

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity == "error")

    @property
    def ok(self) -> bool:
        return not self.errors

    def agents(self, plugin: str | None = None) -> tuple[Component, ...]:
        chosen = [self.plugins[plugin]] if plugin else list(self.plugins.values())
        return tuple(a for p in chosen for a in p.agents)

    def config(self, section: str) -> Mapping[str, Any]:
        return self.configs[section]


def _input_files(project: Project, plugin_dirs: Iterable[Path]) -> Iterable[Path]:
    yield from sorted(project.rules_dir.glob("*.arb")) if project.rules_dir.is_dir() else ()
    yield from config_files(project.config_dir)
    for plugin_dir in plugin_dirs:
        yield from sorted(p for p in plugin_dir.rglob("*") if p.is_file() and p.suffix in (".json", ".md"))
    yield from key_files(project)


def fingerprint(project: Project) -> str:
    """A content hash of every input file and plugin directory: equal hashes mean an identical
    snapshot."""
    digest = hashlib.sha256()
    plugin_dirs = discover(project.plugins)
    for plugin_dir in plugin_dirs:  # a plugin without a single input file is still a plugin
        digest.update(b"plugin\0" + str(plugin_dir).encode() + b"\0")
    for path in _input_files(project, plugin_dirs):
        digest.update(str(path).encode())
        try:
            digest.update(path.read_bytes())
        except OSError:
            digest.update(b"<unreadable>")
    return digest.hexdigest()


def build_snapshot(root: Path, plugin_dirs: Sequence[Path] | None = None) -> Snapshot:
    """Load plugins, configs and rules of a project into one snapshot. Never raises on bad input:
    problems are diagnostics, and ``snapshot.ok`` says whether any is an error."""
    project = Project(Path(root), tuple(Path(p) for p in plugin_dirs or ()))
    digest = fingerprint(project)
    plugins, plugin_diags = load_plugins(project.plugins)
    by_name = MappingProxyType({p.name: p for p in plugins})
    configs, config_diags = load_configs(project.config_dir)
    rules = load_rules([project.rules_dir], by_name)
    return Snapshot(
        project=project,
        plugins=by_name,
        configs=configs,
        rules=rules,
        diagnostics=tuple(plugin_diags) + tuple(config_diags) + tuple(rules.diagnostics),
        fingerprint=digest,
    )
