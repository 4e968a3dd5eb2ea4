"""Binding a routed request's command parameters: given, then the text, then defaults; the rest is missing."""

from __future__ import annotations

import re

import pytest
from arbiter.dsl.bindings import Binding
from arbiter.dsl.program import load_rules

from arbiter.project.model import Component, Plugin
from arbiter.project.plugins import load_plugins
from arbiter.project.snapshot import build_snapshot
from arbiter.routing.commands import CommandIndex
from arbiter.routing.parameters import BindingTable, Bound, Call, bind, call_for, convert


def _re(*patterns: str, flags: int = 0) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p, flags) for p in patterns)


TABLE = {
    ("ops", "ops:scale"): (
        Binding("service", "string", True, _re(r"\bscale\s+(?:the\s+)?([\w-]+)", flags=re.I)),
        Binding("replicas", "integer", True, _re(r"\bto\s+(\w+)\s+replicas", r"(\d+)\s*x\b")),
        Binding("ratio", "number", False, _re(r"ratio\s+(\S+)")),
        Binding("dryRun", "boolean", False, _re(r"dry[- ]run:\s*(\w+)"), default=False),
        Binding("zones", "array", False, _re(r"\bin\s+zones\s+(.+?)(?:\.|$)"), default=("eu-1",)),
        Binding("labels", "object", False, _re(r"labels\s+(\{.*\})")),
        Binding("region", "string", True, default="eu-west"),
        Binding("ticket", "string", True),
    ),
}


def test_text_then_defaults_then_missing():
    bound = bind("ops", "ops:scale", "Scale the checkout-api to 5 replicas", {}, TABLE)
    assert bound == Bound(
        parameters={"service": "checkout-api", "replicas": 5, "dryRun": False, "zones": ["eu-1"], "region": "eu-west"},
        missing=("ticket",),
        sources={"service": "text", "replicas": "text", "dryRun": "default", "zones": "default", "region": "default"},
    )


def test_given_parameters_win_and_are_kept_as_given():
    given = {"replicas": "7", "ticket": "OPS-1", "extra": [1], "region": None}
    bound = bind("ops", "ops:scale", "scale web to 5 replicas", given, TABLE)
    assert bound.parameters == {
        "replicas": "7",
        "ticket": "OPS-1",
        "extra": [1],
        "service": "web",
        "dryRun": False,
        "zones": ["eu-1"],
        "region": "eu-west",  # a given None counts as not given
    }
    assert bound.missing == ()
    assert bound.sources["replicas"] == "given" and bound.sources["extra"] == "given"
    assert bound.sources["region"] == "default"


def test_a_capture_that_does_not_convert_falls_to_the_next_expression():
    bound = bind("ops", "ops:scale", "scale web to five replicas, say 3x", {}, TABLE)
    assert bound.parameters["replicas"] == 3 and bound.sources["replicas"] == "text"
    bound = bind("ops", "ops:scale", "scale web to five replicas", {}, TABLE)
    assert "replicas" not in bound.parameters and bound.missing == ("replicas", "ticket")


def test_each_type_from_text():
    text = 'scale web to 2 replicas ratio 0.75 dry-run: yes in zones eu-1, eu-2 and us-1. labels {"a": 1}'
    bound = bind("ops", "ops:scale", text, {}, TABLE)
    assert bound.parameters["ratio"] == 0.75
    assert bound.parameters["dryRun"] is True and bound.sources["dryRun"] == "text"
    assert bound.parameters["zones"] == ["eu-1", "eu-2", "us-1"]
    assert "labels" not in bound.parameters  # text never gives an object


@pytest.mark.parametrize(
    "text,type_,value",
    [
        ("  acme-corp ", "string", "acme-corp"),
        ("42", "integer", 42),
        ("-3", "integer", -3),
        ("4.5", "integer", None),
        ("4.5", "number", 4.5),
        ("4", "number", 4),
        ("1e9", "number", None),
        ("No", "boolean", False),
        ("enabled", "boolean", True),
        ("perhaps", "boolean", None),
        ("a; b and c", "array", ["a", "b", "c"]),
        (" , ", "array", None),
        ("{}", "object", None),
        ("", "string", None),
    ],
)
def test_convert(text, type_, value):
    converted = convert(text, type_)
    assert converted == value and type(converted) is type(value)


def test_the_command_is_found_with_or_without_its_prefix_and_unknown_ones_keep_what_was_given():
    assert bind("ops", "scale", "scale web to 2 replicas", {}, TABLE).parameters["service"] == "web"
    assert bind("ops", "other:scale", "scale web to 2 replicas", {}, TABLE).parameters["replicas"] == 2
    unknown = bind("ops", "restart", "restart web", {"force": True}, TABLE)
    assert unknown == Bound({"force": True}, (), {"force": "given"})
    assert bind("nobody", "x", "", {}, TABLE) == Bound()


def test_defaults_are_plain_data_the_caller_may_change():
    first = bind("ops", "ops:scale", "", {}, TABLE)
    first.parameters["zones"].append("changed")
    assert bind("ops", "ops:scale", "", {}, TABLE).parameters["zones"] == ["eu-1"]


def test_declared_defaults_and_rule_defaults(tmp_path, repo):
    shipped_plugins = {p.name: p for p in load_plugins([repo / "plugins"])[0]}
    (tmp_path / "p.arb").write_text(
        'parameters ahling-command-center deploy-kubernetes {\n  namespace from /\\bto\\s+(\\w+)/ default "dev"\n}\n'
    )
    bindings = load_rules([tmp_path], shipped_plugins).bindings
    assert bind("ahling-command-center", "deploy-kubernetes", "deploy to staging", {}, bindings).parameters == {
        "namespace": "staging"
    }
    assert bind("ahling-command-center", "deploy-kubernetes", "deploy it", {}, bindings).sources == {
        "namespace": "default"
    }
    # a command with no line in the rules still says what it requires
    assert bind("lobbi-platform-manager", "setup-sso", "sso please", {}, bindings).missing == (
        "application",
        "redirectUri",
    )


@pytest.fixture(scope="module")
def shipped_bindings(repo):
    snapshot = build_snapshot(repo)
    assert snapshot.ok
    return snapshot.rules.bindings


@pytest.mark.parametrize(
    "plugin,command,text,expected",
    [
        (
            "lobbi-platform-manager",
            "create-tenant",
            "onboard tenant acme-corp with its own realm and resources",
            {"tenantId": "acme-corp"},
        ),
        ("lobbi-platform-manager", "configure-keycloak", "configure keycloak for acme-corp", {"tenantId": "acme-corp"}),
        ("ahling-command-center", "deploy-tenant-resources", "resources for tenant globex", {"tenantId": "globex"}),
        ("jira-orchestrator", "jira:work", "work on PROJ-123", {"issueKey": "PROJ-123"}),
        ("jira-orchestrator", "jira:prepare", "prepare PROJ-123 and open the pull request", {"issueKey": "PROJ-123"}),
        ("jira-orchestrator", "jira:pr", "open the PR for ABC2-9", {"issueKey": "ABC2-9"}),
        (
            "ahling-command-center",
            "deploy-kubernetes",
            "deploy the release to production on kubernetes with helm",
            {"namespace": "production"},
        ),
        ("exec-automator", "draft-board-report", "draft the Q3 board report from our KPIs", {"period": "Q3"}),
        (
            "home-assistant",
            "pair-device",
            "my zigbee motion sensor keeps dropping off the mesh",
            {"protocol": "zigbee", "device": "motion sensor"},
        ),
        ("home-assistant", "esphome-config", "ESPHome config for an esp32 temperature sensor", {"board": "esp32"}),
        (
            "fastapi-backend",
            "scaffold-endpoint",
            "add a Beanie model and CRUD endpoints for invoices",
            {"resource": "invoices"},
        ),
        (
            "frontend-powerhouse",
            "audit-accessibility",
            "audit the checkout page for WCAG accessibility problems",
            {"target": "checkout"},
        ),
    ],
)
def test_shipped_bindings_read_the_texts_that_state_a_value(shipped_bindings, plugin, command, text, expected):
    bound = bind(plugin, command, text, {}, shipped_bindings)
    assert {k: v for k, v in bound.parameters.items() if bound.sources[k] == "text"} == expected


@pytest.mark.parametrize(
    "plugin,command,text,missing",
    [
        (
            "lobbi-platform-manager",
            "create-tenant",
            "create a Keycloak realm with roles for the new tenant",
            ("tenantId",),
        ),
        ("lobbi-platform-manager", "create-tenant", "the ops tenant with sso", ("tenantId",)),
        ("jira-orchestrator", "jira:work", "work on the login bug", ("issueKey",)),
        ("jira-orchestrator", "sprint-report", "draft the Q3 board report from our KPIs", ("board",)),
    ],
)
def test_shipped_bindings_do_not_guess(shipped_bindings, plugin, command, text, missing):
    assert bind(plugin, command, text, {}, shipped_bindings).missing == missing


def test_the_table_finds_a_command_by_its_name_or_short_name_and_declared_only_drops_the_rest():
    table = BindingTable(TABLE)
    assert table.get("ops", "ops:scale") is table.get("ops", "scale") is table.get("ops", "x:scale")
    assert table.get("ops", "restart") == () and table.get("nobody", "scale") == ()
    given = {"ticket": "OPS-2", "tenantId": "acme", "replicas": 3}
    kept = bind("ops", "scale", "scale web", given, table, declared_only=True)
    assert "tenantId" not in kept.parameters and kept.parameters["ticket"] == "OPS-2"
    assert kept.parameters["replicas"] == 3 and kept.missing == ()
    assert bind("ops", "restart", "", given, table, declared_only=True) == Bound()


def test_call_for_takes_the_first_command_whose_required_parameters_bind():
    table = BindingTable(
        {
            **TABLE,
            ("ops", "ops:status"): (Binding("service", "string", True, _re(r"status of ([\w-]+)")),),
            ("ops", "ops:restart"): (Binding("service", "string", True, _re(r"restart ([\w-]+)")),),
        }
    )
    # the first command misses its parameters, the second binds them all
    call = call_for("ops", ("ops:status", "ops:restart"), "restart web", {}, table)
    assert call == Call("ops:restart", Bound({"service": "web"}, (), {"service": "text"}))
    # none binds: the first, with what it misses, so the caller can ask for exactly that
    call = call_for("ops", ("ops:status", "ops:restart"), "do something", {}, table)
    assert call.command == "ops:status" and call.missing == ("service",)
    # given parameters satisfy any command
    assert call_for("ops", ("ops:status",), "", {"service": "db"}, table).missing == ()
    # a plugin with nothing invocable: no command, the given parameters (unless declared only)
    assert call_for("ops", (), "", {"a": 1, "b": None}, table) == Call(None, Bound({"a": 1}))
    assert call_for("ops", (), "", {"a": 1}, table, declared_only=True) == Call(None, Bound())


def _plugin(*commands: tuple[str, str]) -> Plugin:
    parts = tuple(Component("command", name, "p", f"commands/{name}.md", description=text) for name, text in commands)
    return Plugin("p", "plugins/p", "claude", commands=parts)


def test_best_keeps_every_command_tied_at_the_top_in_declared_order():
    index = CommandIndex(
        _plugin(
            ("open-ticket", "open a ticket in the tracker"),
            ("close-ticket", "close a ticket in the tracker"),
            ("sync-board", "sync the sprint board"),
        )
    )
    assert index.best("a ticket in the tracker please") == ("open-ticket", "close-ticket")
    assert index.choose("a ticket in the tracker please") == "open-ticket"
    assert index.best("close the ticket") == ("close-ticket",)
    # nothing shared: only the first declared, never every command
    assert index.best("bake a cake") == ("open-ticket",)
    assert CommandIndex(_plugin()).best("anything") == () and CommandIndex(_plugin()).choose("x") is None
