"""The immutable data the whole pipeline reads: plugins and their parts.

Everything here is a frozen dataclass holding tuples and read-only mappings, so a snapshot
can be shared between threads and requests without copying, and a reload can only replace
it, never mutate it under a running request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from arbiter.project.parameters import Parameter, read_parameters


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
class Component:
    """An agent, command or skill of a plugin, read from a markdown file's frontmatter.

    ``keywords`` merges the file's tags and keywords; ``body`` keeps the markdown text so the
    classifier can learn vocabulary from plugins that declare no capabilities. ``parameters`` is
    the typed reading of ``meta["parameters"]``, made once here so lint and routing share it (the
    loader reports what it could not read).
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
    parameters: tuple[Parameter, ...] = field(init=False, default=(), compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parameters", read_parameters(self.meta.get("parameters"))[0])

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

    def accepts_from(self, plugin: str) -> bool:
        """Does this plugin's ``acceptsRoutingFrom`` let ``plugin`` hand it work?"""
        return self.accepts_routing_from is None or plugin in self.accepts_routing_from

    def may_route_to(self, plugin: str) -> bool:
        """Does this plugin's ``canRouteTo`` let it hand work to ``plugin``?"""
        return self.can_route_to is None or plugin in self.can_route_to


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

    @property
    def invocable(self) -> tuple[Component, ...]:
        """What a routed request can ask this plugin's worker to run: its commands; a plugin that
        declares none (many plain Claude Code plugins ship only skills or agents) is asked by the
        name of a skill, else of an agent."""
        return self.commands or self.skills or self.agents

    def route_refusal(self, target: Plugin) -> str | None:
        """Why the manifests forbid this plugin to hand work to ``target``, or None when they
        allow it. Both sides have a say — this plugin's ``canRouteTo`` and the target's
        ``acceptsRoutingFrom`` — and the reason names the side (or both) that refused, so the
        author knows which manifest to change. A plugin may always work with itself."""
        if target.name == self.name:
            return None
        reasons = []
        if not self.routing.may_route_to(target.name):
            reasons.append(f"{self.name} may not route to {target.name} (canRouteTo of {self.name})")
        if not target.routing.accepts_from(self.name):
            reasons.append(
                f"{target.name} does not accept routing from {self.name} (acceptsRoutingFrom of {target.name})"
            )
        return "; ".join(reasons) or None

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
