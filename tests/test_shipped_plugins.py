"""The shipped ecosystem: seven plugins with valid enhanced manifests and consistent contents."""

from __future__ import annotations

import json

import pytest

from arbiter.project.plugins import load_plugins

SHIPPED = [
    "ahling-command-center",
    "exec-automator",
    "fastapi-backend",
    "frontend-powerhouse",
    "home-assistant",
    "jira-orchestrator",
    "lobbi-platform-manager",
]
CHAIN_COMMANDS = {
    "jira-orchestrator": ["jira:prepare", "jira:work", "jira:pr", "jira:docs", "security-scan"],
    "frontend-powerhouse": ["analyze-components", "generate-component"],
    "ahling-command-center": [
        "analyze-infrastructure",
        "build-docker-image",
        "run-security-scan",
        "deploy-kubernetes",
        "deploy-tenant-resources",
        "destroy-tenant-resources",
    ],
    "lobbi-platform-manager": ["create-tenant", "delete-tenant", "configure-keycloak", "remove-keycloak-config"],
    "exec-automator": ["analyze-document"],
}


@pytest.fixture(scope="module")
def shipped(repo):
    plugins, diags = load_plugins([repo / "plugins"])
    return {p.name: p for p in plugins}, diags


def test_all_shipped_plugins_load_without_findings(shipped):
    plugins, diags = shipped
    assert sorted(plugins) == SHIPPED
    assert diags == ()
    for plugin in plugins.values():
        assert plugin.kind == "enhanced"
        assert len(plugin.agents) >= 4 and len(plugin.commands) >= 4
        for comp in plugin.agents + plugin.commands:
            assert comp.description and comp.keywords and comp.model


def test_provides_counts_match_files(shipped, repo):
    plugins, _ = shipped
    for plugin in plugins.values():
        manifest = json.loads((repo / "plugins" / plugin.name / ".claude-plugin" / "plugin.json").read_text())
        assert manifest["provides"] == {"agents": len(plugin.agents), "commands": len(plugin.commands), "skills": 0}


def test_commands_used_by_the_shipped_chains_exist(shipped):
    plugins, _ = shipped
    for plugin, commands in CHAIN_COMMANDS.items():
        for command in commands:
            assert plugins[plugin].command(command) is not None, (plugin, command)


def test_appendix_a_capabilities(shipped):
    plugins, _ = shipped
    fastapi, lobbi = plugins["fastapi-backend"], plugins["lobbi-platform-manager"]
    assert {"backend", "api", "database"} <= set(fastapi.capabilities.domains)
    assert "authentication" not in fastapi.capabilities.domains
    assert {"python", "fastapi", "mongodb"} <= set(fastapi.capabilities.contexts)
    assert "rest-api" in fastapi.capabilities.patterns
    assert "keycloak" in fastapi.capabilities.integrations
    assert "authentication" in lobbi.capabilities.domains
    assert "keycloak" in lobbi.capabilities.contexts
    assert "jwt-auth" in lobbi.capabilities.patterns
    assert "lobbi-platform-manager" in fastapi.routing.can_route_to
    assert "fastapi-backend" in lobbi.routing.accepts_routing_from


def test_every_plugin_accepts_the_coordinator(shipped):
    plugins, _ = shipped
    for name, plugin in plugins.items():
        if name != "jira-orchestrator":
            assert "jira-orchestrator" in plugin.routing.accepts_routing_from
