"""Lint: every kind of finding, with its code and location, all in one run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from arbiter.dsl.program import lint
from click.testing import CliRunner

from arbiter.cli import main


def findings(tmp_path: Path, text: str, plugins) -> list[tuple[str, int, str]]:
    (tmp_path / "t.arb").write_text(text)
    return [(d.code, d.line, d.message) for d in lint([tmp_path], plugins)]


def codes(tmp_path, text, plugins):
    return [c for c, _, _ in findings(tmp_path, text, plugins)]


def test_shipped_rules_are_lint_clean(repo, shipped_plugins):
    assert lint([repo / "rules"], shipped_plugins) == []


@pytest.mark.parametrize(
    "text,code,line",
    [
        ("rule r { when domain backend then prefer fastapi-backnd }", "E101", 1),
        ("chain c { step a: jira-orchestrator jira:prepair }", "E102", 1),
        ("rule r { when domain backnd then prefer fastapi-backend }", "E103", 1),
        (
            "rule r { when domain api then prefer home-assistant }\nrule r { when domain api then avoid exec-automator }",
            "E104",
            2,
        ),
        ("rule r { when plugin fastapi-backend is sleeping then prefer home-assistant }", "E105", 1),
        ("rule r { when domain api }", "E106", 1),
        ("rule r { when text matches /a(b/ then prefer home-assistant }", "E107", 1),
        (
            "chain c sequential {\n  step a: jira-orchestrator jira:work with k = b.x\n  step b: jira-orchestrator jira:pr\n}",
            "E301",
            2,
        ),
        (
            "chain c parallel {\n  step a: jira-orchestrator jira:work\n  step b: jira-orchestrator jira:pr with u = a.x\n}",
            "E301",
            3,
        ),
        ("chain c {\n  step a: jira-orchestrator jira:work with k = nope.x\n}", "E302", 2),
        ("chain c (p: string) {\n  step a: jira-orchestrator jira:work with k = $q\n}", "E303", 2),
        ("chain c saga {\n  step a: lobbi-platform-manager create-tenant\n}", "E304", 2),
        ("rule r { when domain api then prefer home-assistant collaborate exec-automator }", "E401", 1),
        ("rule r { when caller is exec-automator then require home-assistant }", "E401", 1),
        ("chain c (p: string) {\n  if $q == 1 {\n    step a: jira-orchestrator jira:work\n  }\n}", "E303", 2),
        (
            "chain c {\n  step a: exec-automator analyze-document\n  step b: home-assistant create-automation with d = a.x\n}",
            "E401",
            3,
        ),
        ("rule r { when context kubernets then prefer home-assistant }", "W101", 1),
        ("rule r { when domain api then strategy fastest }", "W102", 1),
        ('rule r { when complexity == "simple" and complexity == "complex" then prefer home-assistant }', "W201", 1),
        ("rule r { when urgency > 5 and urgency < 3 then prefer home-assistant }", "W201", 1),
        ("rule r { when domain api and not domain api then prefer home-assistant }", "W201", 1),
        (
            "rule a {\n priority 9\n when domain api\n then exclude home-assistant\n}\n"
            "rule b {\n when domain api and urgency > 3\n then prefer home-assistant\n}",
            "W202",
            6,
        ),
        ("rule r { when fact never-set then prefer home-assistant }", "W203", 1),
        ("rule r { then prefer home-assistant }", "W204", 1),
        ('chain c {\n  step t: lobbi-platform-manager create-tenant with tenant = "acme"\n}', "E305", 2),
        ("chain c {\n  step t: lobbi-platform-manager create-tenant\n}", "E306", 2),
        ("chain c {\n  step w: jira-orchestrator jira:work with issueKey = 123\n}", "E307", 2),
        ("parameters jira-orchestrator jira:work {\n  issueKey from /[A-Z]+-\\d+/\n}", "E308", 2),
        ("chain c sequential fail-fast {\n  step w: jira-orchestrator jira:work with issueKey = $k\n}", "E309", 1),
        ("parameters lobbi-platform-manager create-tenant {\n  tenant from /tenant (\\S+)/\n}", "E305", 2),
        (
            'parameters lobbi-platform-manager create-tenant {\n  tenantId from /(x)/\n  tenantId default "y"\n}',
            "E104",
            3,
        ),
    ],
)
def test_each_finding(tmp_path, shipped_plugins, text, code, line):
    found = findings(tmp_path, text, shipped_plugins)
    assert (code, line) in [(c, ln) for c, ln, _ in found], found


def test_did_you_mean_hints(tmp_path, shipped_plugins):
    (tmp_path / "t.arb").write_text(
        "rule r {\n  when domain backnd\n  then prefer fastapi-backnd\n}\n"
        "chain c {\n  step a: jira-orchestrator jira:prepair\n}\n"
    )
    hints = {d.code: d.hint for d in lint([tmp_path], shipped_plugins)}
    assert hints["E103"] == "did you mean 'backend'?"
    assert hints["E101"] == "did you mean 'fastapi-backend'?"
    assert hints["E102"] == "did you mean 'jira:prepare'?"


def test_more_than_512_rules_on_one_fact_is_fine(tmp_path, shipped_plugins):
    """durable-rules takes 3,000 rules testing one domain when their conditions differ."""
    text = "\n".join(
        f"rule r{i} {{ when domain api and urgency == {i % 9} then prefer home-assistant }}" for i in range(600)
    )
    assert "W108" not in codes(tmp_path, text, shipped_plugins)


def test_the_rule_past_durable_rules_limits_is_named(tmp_path, shipped_plugins):
    text = "".join(
        f'rule r{i} {{\n  when domain api\n  then prefer home-assistant\n  because "x"\n}}\n' for i in range(257)
    )
    (tmp_path / "t.arb").write_text(text)
    (found,) = [d for d in lint([tmp_path], shipped_plugins) if d.code == "W108"]
    assert (found.severity, found.line, found.col) == ("warning", 5 * 256 + 1, 1)
    assert found.message == (
        "durable-rules holds at most 256 rules with the very same condition and rule 'r256' is past that: "
        "the Python engine runs this program"
    )


def test_syntax_and_meaning_errors_together_with_caret(tmp_path, shipped_plugins):
    (tmp_path / "t.arb").write_text(
        'rule a { whn domain api }\n\nrule b { when domain api then prefer nobody because "x" }\n'
    )
    diags = lint([tmp_path], shipped_plugins)
    assert [(d.code, d.line) for d in diags] == [("E001", 1), ("E101", 3)]
    text = diags[1].format()
    assert text.splitlines()[0].endswith("t.arb:3:38: error[E101]: unknown plugin 'nobody'")
    assert text.splitlines()[2].index("^") == 4 + 37


def test_cli_exit_codes_and_json(tmp_path, repo):
    runner = CliRunner()
    clean = runner.invoke(main, ["--root", str(repo), "lint"])
    assert clean.exit_code == 0
    (tmp_path / "bad.arb").write_text('rule r { when domain api then prefer nobody because "x" }\n')
    (tmp_path / "warn.arb").write_text("rule w { then prefer home-assistant }\n")
    bad = runner.invoke(main, ["--root", str(repo), "lint", str(tmp_path / "bad.arb"), "--format", "json"])
    assert bad.exit_code == 1
    (item,) = json.loads(bad.stdout)
    assert item["code"] == "E101" and item["line"] == 1
    warn = runner.invoke(main, ["--root", str(repo), "lint", str(tmp_path / "warn.arb")])
    assert warn.exit_code == 0 and "W204" in warn.stdout
    usage = runner.invoke(main, ["--root", str(repo), "lint", "--format", "xml"])
    assert usage.exit_code == 2


@dataclass(frozen=True)
class _Param:
    name: str
    type: str = "string"
    required: bool = False
    default: object = None


@dataclass(frozen=True)
class _Part:
    name: str
    parameters: tuple[_Param, ...] = ()


@dataclass(frozen=True)
class _Capabilities:
    domains: tuple[str, ...] = ("billing",)
    contexts: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    integrations: tuple[str, ...] = ()


@dataclass(frozen=True)
class _View:
    """Only what the language declares it reads of a plugin (dsl.plugin_view), nothing of the project."""

    name: str
    commands: tuple[_Part, ...] = ()
    capabilities: _Capabilities = _Capabilities()

    def command(self, name: str) -> _Part | None:
        return next((c for c in self.commands if c.name == name), None)

    def route_refusal(self, target: _View) -> str | None:
        return f"{self.name} may not route to {target.name}" if target.name == "vault" else None


def test_lint_needs_only_the_narrow_plugin_view(tmp_path):
    plugins = {v.name: v for v in (_View("ledger", (_Part("charge"),)), _View("vault"))}
    text = (
        'rule r { when domain billing then prefer ledger collaborate vault because "x" }\n'
        "chain c {\n  step a: ledger charge\n  step b: ledger refund\n}\n"
    )
    found = findings(tmp_path, text, plugins)
    assert [(c, ln) for c, ln, _ in found] == [("E401", 1), ("E102", 4)]
    assert found[0][2] == "ledger may not route to vault"


def test_the_narrow_view_carries_the_commands_parameters(tmp_path):
    charge = _Part("charge", (_Param("amount", "integer", required=True), _Param("memo")))
    plugins = {"ledger": _View("ledger", (charge, _Part("refund")))}
    text = (
        'chain c {\n  step a: ledger charge with amount = 2.5, memmo = "x"\n  step b: ledger refund with anything = 1\n}\n'
        "parameters ledger charge {\n  amount from /(\\d+) EUR/\n}\n"
    )
    found = findings(tmp_path, text, plugins)
    assert [(c, ln) for c, ln, _ in found] == [("E307", 2), ("E305", 2)]
    assert found[0][2] == "parameter 'amount' of charge takes an integer, not the number 2.5"


def located(tmp_path, text, plugins):
    (tmp_path / "t.arb").write_text(text)
    return [(d.code, d.line, d.col, d.message, d.hint) for d in lint([tmp_path], plugins)]


def test_step_parameters_are_located_with_hints(tmp_path, shipped_plugins):
    text = (
        "chain c saga (t: string) {\n"
        '  step tenant: lobbi-platform-manager create-tenant with tenant = $t, tenantId = 7 compensate delete-tenant with tenantid = "x"\n'
        "}\n"
    )
    assert located(tmp_path, text, shipped_plugins) == [
        (
            "E306",
            2,
            3,
            "the compensation delete-tenant of step 'tenant' does not give its required parameter 'tenantId'",
            "add `tenantId = ...` after `compensate delete-tenant with`",
        ),
        ("E305", 2, 58, "create-tenant has no parameter 'tenant'", "did you mean 'tenantId'?"),
        ("E307", 2, 82, "parameter 'tenantId' of create-tenant takes a string, not the number 7", ""),
        ("E305", 2, 114, "delete-tenant has no parameter 'tenantid'", "did you mean 'tenantId'?"),
    ]
    missing = located(
        tmp_path, 'chain c {\n  step s: lobbi-platform-manager setup-sso with application = "crm"\n}\n', shipped_plugins
    )
    assert missing == [
        (
            "E306",
            2,
            3,
            "step 's' does not give setup-sso's required parameter 'redirectUri'",
            "add `with redirectUri = ...`",
        )
    ]


def test_literals_of_each_type(tmp_path, shipped_plugins):
    """References are typed only at run time; `none` stands for no value, which only a required parameter refuses."""
    ok = (
        "chain c (k: string) {\n"
        "  step a: jira-orchestrator jira:work with issueKey = $k\n"
        "  step b: jira-orchestrator jira:pr with issueKey = none\n"
        "  step c: ahling-command-center destroy-tenant-resources with resourceIds = a.created\n"
        "  step d: ahling-command-center build-docker-image with tag = prod\n"
        "}\n"
    )
    assert located(tmp_path, ok, shipped_plugins) == []
    bad = (
        "chain c {\n"
        "  step a: jira-orchestrator jira:work with issueKey = none\n"
        '  step b: ahling-command-center destroy-tenant-resources with resourceIds = "r-1"\n'
        "  step c: ahling-command-center build-docker-image with tag = true\n"
        "}\n"
    )
    assert [(c, ln, m) for c, ln, _, m, _ in located(tmp_path, bad, shipped_plugins)] == [
        ("E307", 2, "parameter 'issueKey' of jira:work takes a string, not none"),
        ("E307", 3, "parameter 'resourceIds' of destroy-tenant-resources takes an array, not the string \"r-1\""),
        ("E307", 4, "parameter 'tag' of build-docker-image takes a string, not true"),
    ]


def test_commands_that_declare_no_parameters_are_not_checked(tmp_path, shipped_plugins):
    text = "chain c {\n  step a: lobbi-platform-manager platform-status with anything = 1\n}\n"
    assert located(tmp_path, text, shipped_plugins) == []


def test_parameters_blocks_are_located_with_hints(tmp_path, shipped_plugins):
    text = (
        "parameters lobbi-platform-manager create-tenat {\n  tenantId from /(x)/\n}\n"
        "parameters lobbi-platform-mgr create-tenant {\n  tenantId from /(x)/\n}\n"
        "parameters lobbi-platform-manager create-tenant {\n"
        "  tenantID from /tenant (\\S+)/\n"
        "  tenantId from /tenant \\S+/, /a(b/, /for (\\S+)/ default 3\n"
        "}\n"
    )
    assert located(tmp_path, text, shipped_plugins) == [
        ("E102", 1, 35, "lobbi-platform-manager has no command 'create-tenat'", "did you mean 'create-tenant'?"),
        ("E101", 4, 12, "unknown plugin 'lobbi-platform-mgr'", "did you mean 'lobbi-platform-manager'?"),
        ("E305", 8, 3, "create-tenant has no parameter 'tenantID'", "did you mean 'tenantId'?"),
        (
            "E308",
            9,
            17,
            "/tenant \\S+/ captures nothing; the value of 'tenantId' is its group 1",
            "put the value in parentheses, e.g. /tenant\\s+([a-z0-9-]+)/; use (?:...) for other groups",
        ),
        (
            "E107",
            9,
            31,
            "invalid regular expression /a(b/: missing ), unterminated subpattern",
            "regular expressions use Python syntax",
        ),
        ("E307", 9, 58, "parameter 'tenantId' of create-tenant takes a string, not the number 3", ""),
    ]


def test_object_parameters_cannot_come_from_text(tmp_path):
    plugins = {"p": _View("p", (_Part("run", (_Param("options", "object"), _Param("count", "integer"))),))}
    text = 'parameters p run {\n  options from /(\\{.*\\})/\n  count from /(\\d+)/ default "two"\n}\n'
    assert [(c, ln, m) for c, ln, m in findings(tmp_path, text, plugins)] == [
        ("E307", 2, "parameter 'options' of run takes an object, which text cannot give"),
        ("E307", 3, "parameter 'count' of run takes an integer, not the string \"two\""),
    ]


def test_fail_fast_and_wait_all_are_for_parallel_chains(tmp_path, shipped_plugins):
    text = (
        "chain a parallel fail-fast {\n  step x: jira-orchestrator security-scan\n}\n"
        "chain b parallel wait-all {\n  step x: jira-orchestrator security-scan\n}\n"
        "chain c saga wait-all {\n  step x: jira-orchestrator security-scan compensate security-scan\n}\n"
    )
    assert located(tmp_path, text, shipped_plugins) == [
        (
            "E309",
            7,
            1,
            "'wait-all' is for parallel chains; 'c' is saga",
            "drop it, or write `chain c parallel wait-all`",
        )
    ]


def test_meaning_errors_at_the_offending_token(tmp_path, shipped_plugins):
    text = (
        "capabilities fastapi-backend {\n  backend 1\n  databse 0.9\n}\n"
        "rule r {\n  when domain api\n  then collaborate jira-orchestrator after backnd\n"
        '       require home-assistant exclude home-assistant\n  because "x"\n}\n'
        "rule q {\n  when domain api\n  then prefer home-assistant\n}\n"
    )
    assert located(tmp_path, text, shipped_plugins) == [
        ("W101", 3, 3, "'databse' is not a known domain, context or pattern", "did you mean 'database'?"),
        ("E109", 7, 44, "no phase is called 'backnd'", "did you mean 'backend'?"),
        ("E110", 8, 39, "rule 'r' both requires and excludes home-assistant", "keep one of the two actions"),
        (
            "W205",
            11,
            1,
            "rule 'q' has no `because`: explain has no reason to show for it",
            'add `because "..."`, the reason in words',
        ),
    ]
    caret = [d for d in lint([tmp_path], shipped_plugins) if d.code == "E109"][0].format().splitlines()
    assert caret[1:3] == ["      then collaborate jira-orchestrator after backnd", "    " + " " * 43 + "^"]
