"""Turning plugin directories into :class:`~arbiter.model.Plugin` values.

Two kinds of directory are read: Arbiter's enhanced manifest (capabilities, routing, error
handling) and plain Claude Code plugins (``.claude-plugin/plugin.json`` with little more than a
name). The files on disk are the truth; ``index.json`` registries are only cross-checked, since
in the wild they are often stale or of another shape. Nothing here aborts on a bad file: each
odd file yields one located warning and the best reading of it. Only an enhanced manifest that
breaks its schema is an error, because routing would otherwise run on a config the author did
not mean.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from arbiter.dsl.diagnostics import Diagnostic
from arbiter.project import frontmatter
from arbiter.project.documents import DocumentError, read_document
from arbiter.project.model import (
    Capabilities,
    CircuitBreakerPolicy,
    Component,
    ErrorHandling,
    FallbackPolicy,
    Plugin,
    RetryPolicy,
    Routing,
    freeze,
)
from arbiter.project.parameters import read_parameters
from arbiter.project.schemas import CLAUDE_MANIFEST_SCHEMA, MANIFEST_SCHEMA, validate

MANIFEST = Path(".claude-plugin") / "plugin.json"
ENHANCED_KEYS = ("apiVersion", "routing", "errorHandling", "provides")
CAPABILITY_KEYS = ("domains", "contexts", "patterns", "integrations")
KEYWORD_FIELDS = ("tags", "keywords", "triggers", "trigger_phrases")


@dataclass
class _Collector:
    """Diagnostics gathered while loading, one warning per odd file."""

    items: list[Diagnostic] = field(default_factory=list)

    def file_notes(self, path: Path, notes: list[tuple[int, str]], code: str, lines: list[str]) -> None:
        if not notes:
            return
        line = notes[0][0]
        text = "; ".join(msg for _, msg in notes)
        src = lines[line - 1] if 0 < line <= len(lines) else ""
        self.items.append(Diagnostic(str(path), line, 1, "warning", code, text, source_line=src))


def is_plugin_dir(path: Path) -> bool:
    return (path / MANIFEST).is_file() or any((path / d).is_dir() for d in ("agents", "commands", "skills"))


def discover(dirs: Iterable[Path]) -> list[Path]:
    """Each given directory is a plugin itself or a folder of plugins (sorted by name)."""
    found: list[Path] = []
    for base in dirs:
        if not base.is_dir():
            continue
        if is_plugin_dir(base):
            found.append(base)
            continue
        found.extend(p for p in sorted(base.iterdir()) if p.is_dir() and is_plugin_dir(p))
    return found


# ---------------------------------------------------------------- components


def _stem(path: Path, kind: str) -> str:
    return path.parent.name if kind == "skill" else path.stem


def _normal(name: str) -> str:
    return "-".join(name.strip("/ ").lower().replace("_", " ").split())


def same_name(name: str, stem: str) -> bool:
    """Compare names the way people mean them: a ``plugin:`` prefix, slash, case or spacing aside."""
    wanted = _normal(stem)
    return wanted in (_normal(name.split(":")[-1]), _normal(name.replace(":", "-")))


def _keywords(meta: dict[str, Any], notes: list[tuple[int, str]]) -> tuple[str, ...]:
    words: list[str] = []
    for key in KEYWORD_FIELDS:
        values, was_string = frontmatter.as_list(meta.get(key))
        if was_string:
            notes.append((2, f"'{key}' is a string where a list is expected; split on commas"))
        words.extend(values)
    return tuple(dict.fromkeys(words))


def read_component(path: Path, kind: str, plugin: str, collector: _Collector) -> Component:
    """Read one agent/command/skill file; odd files give one warning and a best reading."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    fm = frontmatter.parse(text)
    notes = list(fm.notes)
    meta = fm.meta
    stem = _stem(path, kind)
    name = meta.get("name")
    if not isinstance(name, str) or not name.strip():
        if fm.meta:
            notes.append((2, f"no 'name'; using the file name '{stem}'"))
        name = stem
    name = name.strip()
    if not same_name(name, stem) and kind != "skill" and path.name.lower() != "readme.md":
        notes.append((2, f"name '{name}' differs from the file name '{stem}'"))
    for key in ("tools", "allowed-tools"):
        if isinstance(meta.get(key), str) and "," in meta[key]:
            notes.append((2, f"'{key}' is a string where a list is expected; split on commas"))
    description = meta.get("description") or meta.get("intent") or ""
    if not isinstance(description, str):
        description = str(description)
    if not description:
        description = frontmatter.first_paragraph(fm.body)
    keywords = _keywords(meta, notes)
    caps, _ = frontmatter.as_list(meta.get("capabilities"))
    safe_meta = {k: v for k, v in meta.items() if isinstance(k, str)}
    safe_meta.setdefault("capabilities", caps)
    plain = json.loads(json.dumps(safe_meta, default=str))
    notes.extend((_key_line(text, "parameters"), note) for note in read_parameters(plain.get("parameters"))[1])
    collector.file_notes(path, notes, "W010", text.splitlines())
    model = meta.get("model")
    category = meta.get("category")
    return Component(
        kind=kind,
        name=name,
        plugin=plugin,
        path=str(path),
        description=" ".join(description.split()),
        keywords=keywords,
        model=str(model) if model else None,
        category=str(category) if category else None,
        body=fm.body,
        meta=freeze(plain),
    )


def _key_line(text: str, key: str) -> int:
    """The line of a top-level frontmatter key (2, the first frontmatter line, when not found)."""
    found = re.search(rf"^{re.escape(key)}\s*:", text, re.M)
    return text.count("\n", 0, found.start()) + 1 if found else 2


def _component_files(plugin_dir: Path, kind: str) -> list[Path]:
    if kind == "skill":
        return sorted(plugin_dir.glob("skills/*/SKILL.md"))
    return sorted(p for p in (plugin_dir / f"{kind}s").glob("*.md") if p.is_file())


def _index_names(data: Any, kind: str) -> list[str] | None:
    """Paths or names listed by an index.json of any of the shapes met in the wild."""
    entries = data.get("entries", data.get(f"{kind}s")) if isinstance(data, dict) else data
    if not isinstance(entries, list):
        return None
    names = []
    for entry in entries:
        if isinstance(entry, dict):
            ref = entry.get("path") or entry.get("file") or entry.get("name")
            names.append(Path(str(ref)).stem if ref else "")
        elif isinstance(entry, str):
            names.append(Path(entry).stem)
    return names


def _check_index(plugin_dir: Path, kind: str, files: list[Path], collector: _Collector) -> None:
    index = plugin_dir / f"{kind}s" / "index.json"
    if not index.is_file():
        return
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        collector.items.append(Diagnostic(str(index), 1, 1, "warning", "W012", f"index is unreadable ({exc}); ignored"))
        return
    listed = _index_names(data, kind)
    if listed is None:
        collector.items.append(
            Diagnostic(str(index), 1, 1, "warning", "W012", "index has an unknown shape; the files on disk are used")
        )
        return
    on_disk = {_stem(p, kind) for p in files}
    missing = sorted(set(listed) - on_disk - {""})
    unlisted = sorted(on_disk - set(listed))
    if missing or unlisted:
        parts = []
        if missing:
            parts.append(f"lists {len(missing)} missing ({', '.join(missing[:3])})")
        if unlisted:
            parts.append(f"omits {len(unlisted)} on disk ({', '.join(unlisted[:3])})")
        collector.items.append(
            Diagnostic(
                str(index),
                1,
                1,
                "warning",
                "W012",
                "index is stale: " + "; ".join(parts) + "; the files on disk are used",
            )
        )


def read_components(plugin_dir: Path, kind: str, plugin: str, collector: _Collector) -> tuple[Component, ...]:
    files = _component_files(plugin_dir, kind)
    if kind != "skill":
        _check_index(plugin_dir, kind, files, collector)
    out: list[Component] = []
    seen: dict[str, str] = {}
    for path in files:
        comp = read_component(path, kind, plugin, collector)
        if comp.name in seen:
            collector.items.append(
                Diagnostic(
                    str(path),
                    1,
                    1,
                    "warning",
                    "W011",
                    f"{kind} name '{comp.name}' is also used by {seen[comp.name]}; both are kept",
                )
            )
        seen.setdefault(comp.name, path.name)
        out.append(comp)
    return tuple(out)


# ---------------------------------------------------------------- manifests


def _tuple(value: Any) -> tuple[str, ...]:
    values, _ = frontmatter.as_list(value)
    return tuple(values)


def _error_handling(data: dict[str, Any]) -> ErrorHandling:
    eh = data.get("errorHandling") or {}
    cb, rp, fb = eh.get("circuitBreaker") or {}, eh.get("retryPolicy") or {}, eh.get("fallback") or {}
    fallbacks = list(_tuple(fb.get("fallbackPlugins")))
    if fb.get("fallbackPlugin") and fb["fallbackPlugin"] not in fallbacks:
        fallbacks.insert(0, fb["fallbackPlugin"])
    default_cb, default_rp = CircuitBreakerPolicy(), RetryPolicy()
    return ErrorHandling(
        circuit_breaker=CircuitBreakerPolicy(
            enabled=cb.get("enabled", default_cb.enabled),
            threshold=cb.get("threshold", default_cb.threshold),
            timeout_ms=cb.get("timeout", default_cb.timeout_ms),
            half_open_retries=cb.get("halfOpenRetries", default_cb.half_open_retries),
            window_ms=cb.get("monitoringWindow", default_cb.window_ms),
            slow_call_ms=cb.get("slowCallDuration"),
        ),
        retry=RetryPolicy(
            max_retries=rp.get("maxRetries", default_rp.max_retries),
            backoff=rp.get("backoff", default_rp.backoff),
            initial_delay_ms=rp.get("initialDelay", default_rp.initial_delay_ms),
            max_delay_ms=rp.get("maxDelay", default_rp.max_delay_ms),
            jitter=float(rp.get("jitter", default_rp.jitter)),
            retryable_errors=_tuple(rp.get("retryableErrors")),
        ),
        fallback=FallbackPolicy(
            strategy=fb.get("strategy", "graceful-degradation"),
            plugins=tuple(fallbacks),
            cacheable=_tuple(fb.get("cacheableCommands")),
            cache_ttl_ms=fb.get("cacheTtl", FallbackPolicy.cache_ttl_ms),
        ),
    )


def _routing(data: dict[str, Any]) -> Routing:
    r = data.get("routing") or {}

    def acl(key: str) -> tuple[str, ...] | None:
        return tuple(r[key]) if isinstance(r.get(key), list) else None

    return Routing(
        priority=int(r.get("priority", 100)),
        keywords=_tuple(r.get("keywords")),
        context_patterns=_tuple(r.get("contextPatterns")),
        accepts_routing_from=acl("acceptsRoutingFrom"),
        can_route_to=acl("canRouteTo"),
    )


def is_enhanced(data: Any) -> bool:
    if not isinstance(data, dict):
        return False
    caps = data.get("capabilities")
    return any(k in data for k in ENHANCED_KEYS) or (isinstance(caps, dict) and any(k in caps for k in CAPABILITY_KEYS))


def _read_manifest(plugin_dir: Path, collector: _Collector) -> tuple[dict[str, Any] | None, str, bool]:
    """Return (manifest data or None when unusable, kind, ok)."""
    path = plugin_dir / MANIFEST
    if not path.is_file():
        collector.items.append(
            Diagnostic(
                str(plugin_dir),
                0,
                0,
                "warning",
                "W001",
                f"no {MANIFEST}; plugin named after its directory '{plugin_dir.name}'",
            )
        )
        return {}, "claude", True
    try:
        doc = read_document(path)
    except DocumentError as exc:
        collector.items.append(
            Diagnostic(exc.path, exc.line, exc.col, "error", "E001", exc.message, source_line=exc.source_line)
        )
        return None, "claude", False
    enhanced = is_enhanced(doc.data)
    schema = MANIFEST_SCHEMA if enhanced else CLAUDE_MANIFEST_SCHEMA
    data, diags = validate(doc, schema, "E002", "W003")
    collector.items.extend(diags)
    ok = data is not None
    return data, ("enhanced" if enhanced else "claude"), ok


def load_plugin(plugin_dir: Path, collector: _Collector | None = None) -> tuple[Plugin | None, list[Diagnostic]]:
    """Load one plugin directory; ``None`` when its manifest is unusable (an error says why)."""
    own = collector or _Collector()
    start = len(own.items)
    data, kind, ok = _read_manifest(plugin_dir, own)
    if not ok or data is None:
        return None, own.items[start:]
    name = str(data.get("name") or plugin_dir.name)
    caps = data.get("capabilities") if kind == "enhanced" else {}
    extra_keywords: tuple[str, ...] = ()
    if kind == "claude" and isinstance(data.get("capabilities"), dict):
        extra_keywords = _tuple(data["capabilities"].get("provides"))
    plugin = Plugin(
        name=name,
        path=str(plugin_dir),
        kind=kind,
        version=str(data.get("version") or "0.0.0"),
        description=str(data.get("description") or ""),
        keywords=tuple(dict.fromkeys(_tuple(data.get("keywords")) + extra_keywords)),
        capabilities=Capabilities(**{k: _tuple((caps or {}).get(k)) for k in CAPABILITY_KEYS}),
        routing=_routing(data),
        error_handling=_error_handling(data),
        agents=read_components(plugin_dir, "agent", name, own),
        commands=read_components(plugin_dir, "command", name, own),
        skills=read_components(plugin_dir, "skill", name, own),
        manifest=freeze(data),
    )
    return plugin, own.items[start:]


def load_plugins(dirs: Sequence[Path]) -> tuple[tuple[Plugin, ...], tuple[Diagnostic, ...]]:
    """Load every plugin under ``dirs``. The first plugin of a name wins; later ones are reported."""
    collector = _Collector()
    plugins: dict[str, Plugin] = {}
    for plugin_dir in discover(dirs):
        plugin, _ = load_plugin(plugin_dir, collector)
        if plugin is None:
            continue
        if plugin.name in plugins:
            collector.items.append(
                Diagnostic(
                    str(plugin_dir / MANIFEST),
                    1,
                    1,
                    "warning",
                    "W002",
                    f"plugin '{plugin.name}' is already loaded from {plugins[plugin.name].path}; this copy is ignored",
                )
            )
            continue
        plugins[plugin.name] = plugin
    return tuple(plugins.values()), tuple(collector.items)
