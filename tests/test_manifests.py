"""Manifest and config validation: located errors, unknown keys as warnings, nothing lost."""

from __future__ import annotations

import json
from pathlib import Path

from arbiter.project.configs import load_configs
from arbiter.project.plugins import load_plugins

MANIFEST = {
    "name": "demo",
    "version": "1.2.0",
    "apiVersion": "v1",
    "description": "demo plugin",
    "capabilities": {"domains": ["backend"], "contexts": ["python"], "patterns": [], "integrations": []},
    "routing": {"priority": 90, "keywords": ["api"], "acceptsRoutingFrom": ["a"], "canRouteTo": []},
    "errorHandling": {
        "circuitBreaker": {"enabled": True, "threshold": 3, "timeout": 1000, "halfOpenRetries": 2},
        "retryPolicy": {"maxRetries": 2, "backoff": "fibonacci", "initialDelay": 10, "maxDelay": 100},
        "fallback": {"strategy": "graceful-degradation", "fallbackPlugin": "b"},
    },
}


def _plugin(root: Path, name: str, manifest: dict | str) -> Path:
    d = root / name
    (d / ".claude-plugin").mkdir(parents=True)
    text = manifest if isinstance(manifest, str) else json.dumps(manifest, indent=2)
    (d / ".claude-plugin" / "plugin.json").write_text(text)
    (d / "agents").mkdir()
    (d / "agents" / "one.md").write_text("---\nname: one\ndescription: first agent\ntags: [x]\n---\nbody\n")
    return d


def test_enhanced_manifest_is_read(tmp_path):
    _plugin(tmp_path, "demo", MANIFEST)
    plugins, diags = load_plugins([tmp_path])
    assert diags == ()
    (p,) = plugins
    assert p.kind == "enhanced"
    assert p.capabilities.domains == ("backend",)
    assert p.routing.priority == 90
    assert p.routing.accepts_routing_from == ("a",)
    assert p.routing.can_route_to == ()
    assert p.error_handling.retry.backoff == "fibonacci"
    assert p.error_handling.circuit_breaker.threshold == 3
    assert p.error_handling.fallback.plugins == ("b",)
    assert [a.name for a in p.agents] == ["one"]


def test_invalid_manifest_error_names_line_and_field(tmp_path):
    bad = json.loads(json.dumps(MANIFEST))
    bad["routing"]["priority"] = "high"
    bad["errorHandling"]["retryPolicy"]["backoff"] = "random"
    _plugin(tmp_path, "demo", bad)
    good = dict(MANIFEST, name="other")
    _plugin(tmp_path, "other", good)
    plugins, diags = load_plugins([tmp_path])
    assert [p.name for p in plugins] == ["other"]  # the broken one is refused, the other kept
    errors = sorted(d.format(show_source=False) for d in diags if d.severity == "error")
    path = tmp_path / "demo" / ".claude-plugin" / "plugin.json"
    lines = path.read_text().splitlines()
    prio_line = next(i for i, ln in enumerate(lines, 1) if '"priority"' in ln)
    backoff_line = next(i for i, ln in enumerate(lines, 1) if '"backoff"' in ln)
    assert any(
        e.startswith(f"{path}:{prio_line}:") and "routing.priority: must be of integer type" in e for e in errors
    )
    assert any(
        e.startswith(f"{path}:{backoff_line}:") and "errorHandling.retryPolicy.backoff: unallowed value random" in e
        for e in errors
    )


def test_unknown_keys_are_one_warning(tmp_path):
    _plugin(tmp_path, "demo", dict(MANIFEST, extra=1, more={"a": 1}))
    plugins, diags = load_plugins([tmp_path])
    assert len(plugins) == 1
    (d,) = diags
    assert d.severity == "warning" and "unknown keys ignored: extra, more" in d.message


def test_broken_json_is_located(tmp_path):
    _plugin(tmp_path, "demo", '{\n  "name": "demo",\n  "version": 1.0.0\n}\n')
    plugins, diags = load_plugins([tmp_path])
    assert plugins == ()
    (d,) = diags
    assert (d.line, d.severity, d.code) == (3, "error", "E001")
    assert "invalid JSON" in d.message


def test_configs_default_when_missing(tmp_path):
    configs, diags = load_configs(tmp_path / "nope")
    assert diags == ()
    assert configs["broker"]["endpoints"]["frontend"] == "tcp://127.0.0.1:5555"
    assert configs["routing"]["weights"]["domain"] == 30
    assert configs["state"]["database"].startswith("sqlite:///")


def test_config_errors_are_located_and_defaults_kept(tmp_path):
    (tmp_path / "broker.yaml").write_text("endpoints:\n  frontend: http://x\nheartbeat:\n  interval_ms: 5\n")
    (tmp_path / "routing.yaml").write_text("weights:\n  domain: 40\nfoo: 1\n")
    (tmp_path / "mystery.yaml").write_text("a: 1\n")
    configs, diags = load_configs(tmp_path)
    text = [d.format(show_source=False) for d in diags]
    broker = str(tmp_path / "broker.yaml")
    assert any(t.startswith(f"{broker}:2:") and "endpoints.frontend: value does not match regex" in t for t in text)
    assert any(t.startswith(f"{broker}:4:") and "heartbeat.interval_ms: min value is 10" in t for t in text)
    assert configs["broker"]["endpoints"]["frontend"] == "tcp://127.0.0.1:5555"  # invalid file: defaults kept
    assert configs["routing"]["weights"]["domain"] == 40  # valid file with an unknown key: applied
    assert configs["routing"]["weights"]["context"] == 20
    assert any("unknown keys ignored: foo" in t for t in text)
    assert any("mystery.yaml" in t and "unknown config file" in t for t in text)
