"""The immutable data the whole pipeline reads: plugins, their parts, diagnostics.

Everything here is a frozen dataclass holding tuples and read-only mappings, so a snapshot
can be shared between threads and requests without copying, and a reload can only replace
it, never mutate it under a running request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping


def freeze(value: Any) -> Any:
    """Return a deeply read-only copy of plain YAML/JSON data (dicts, lists, scalars)."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Turn frozen data back into plain dicts and lists (for JSON output)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class Diagnostic:
    """One finding about an input file, printed as ``path:line:col: severity[CODE]: message``."""

    path: str
    line: int
    col: int
    severity: str  # "error" | "warning"
    code: str
    message: str
    hint: str = ""
    source_line: str = ""

    def format(self, show_source: bool = True) -> str:
        where = f"{self.path}:{self.line}:{self.col}" if self.line else self.path
        out = [f"{where}: {self.severity}[{self.code}]: {self.message}"]
        if show_source and self.source_line and self.line:
            out.append(f"    {self.source_line.rstrip()}")
            out.append("    " + " " * max(self.col - 1, 0) + "^")
        if self.hint:
            out.append(f"  hint: {self.hint}")
        return "\n".join(out)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "line": self.line,
            "col": self.col,
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass(frozen=True)
class Component:
    """An agent, command or skill of a plugin, read from a markdown file's frontmatter.

    ``keywords`` merges the file's tags and keywords; ``body`` keeps the markdown text so the
    classifier can learn vocabulary from plugins that declare no capabilities.
    """

    kind: str  # "agent" | "command" | "skill"
    name: str
    plugin: str
    path: str
    description: str = ""
    keywords: tuple[str, ...] = ()
    model: str | None = None
    category: str | None = None
    body: str = ""
    meta: Mapping[str, Any] = field(default_factory=lambda: EMPTY)

    @property
    def id(self) -> str:
        return f"{self.plugin}::{self.name}"


@dataclass(frozen=True)
class Capabilities:
    domains: tuple[str, ...] = ()
    contexts: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    integrations: tuple[str, ...] = ()


@dataclass(frozen=True)
class Routing:
    """Routing hints from a manifest. ``None`` for an ACL means "no restriction"."""

    priority: int = 100
    keywords: tuple[str, ...] = ()
    context_patterns: tuple[str, ...] = ()
    accepts_routing_from: tuple[str, ...] | None = None
    can_route_to: tuple[str, ...] | None = None


@dataclass(frozen=True)
class CircuitBreakerPolicy:
    enabled: bool = True
    threshold: int = 5
    timeout_ms: int = 60_000
    half_open_retries: int = 3
    window_ms: int = 60_000
    slow_call_ms: int | None = None


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    backoff: str = "exponential"  # linear | exponential | fibonacci
    initial_delay_ms: int = 1000
    max_delay_ms: int = 10_000
    jitter: float = 0.2
    retryable_errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class FallbackPolicy:
    strategy: str = "graceful-degradation"
    plugins: tuple[str, ...] = ()
    cacheable: tuple[str, ...] = ()  # commands whose last good result may answer when all else fails
    cache_ttl_ms: int = 3_600_000


@dataclass(frozen=True)
class ErrorHandling:
    circuit_breaker: CircuitBreakerPolicy = field(default_factory=CircuitBreakerPolicy)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    fallback: FallbackPolicy = field(default_factory=FallbackPolicy)


@dataclass(frozen=True)
class Plugin:
    """One plugin directory, either an Arbiter manifest ("enhanced") or a plain Claude Code plugin."""

    name: str
    path: str
    kind: str  # "enhanced" | "claude"
    version: str = "0.0.0"
    description: str = ""
    keywords: tuple[str, ...] = ()
    capabilities: Capabilities = field(default_factory=Capabilities)
    routing: Routing = field(default_factory=Routing)
    error_handling: ErrorHandling = field(default_factory=ErrorHandling)
    agents: tuple[Component, ...] = ()
    commands: tuple[Component, ...] = ()
    skills: tuple[Component, ...] = ()
    manifest: Mapping[str, Any] = field(default_factory=lambda: EMPTY)

    def components(self) -> tuple[Component, ...]:
        return self.agents + self.commands + self.skills

    def command(self, name: str) -> Component | None:
        """Find a command by its declared name or its name without a ``prefix:``."""
        for cmd in self.commands:
            if cmd.name == name or cmd.name.split(":")[-1] == name:
                return cmd
        return None

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "kind": self.kind,
            "path": self.path,
            "agents": len(self.agents),
            "commands": len(self.commands),
            "skills": len(self.skills),
        }
