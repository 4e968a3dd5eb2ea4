"""Compiling to the rule IR: each construct maps to the documented conditions and actions."""

from __future__ import annotations

import pytest
from arbiter.dsl import ir
from arbiter.dsl.compiler import condition
from arbiter.dsl.parser import parse
from arbiter.dsl.program import load_rules


def cond_of(text: str) -> ir.Condition:
    module, problems = parse(f"rule r {{ when {text} then prefer p }}")
    assert problems == [], problems
    return condition(module.decls[0].when)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("domain backend", ir.Exists("domain.backend")),
        ("domain backend score >= 0.5", ir.Compare("domain.backend", ">=", 0.5)),
        ("context keycloak", ir.Exists("context.keycloak")),
        ("pattern rest-api", ir.Exists("pattern.rest-api")),
        ("fact needs-auth", ir.Exists("fact.needs-auth")),
        ('fact tier == "gold"', ir.Compare("fact.tier", "==", "gold")),
        ("text matches /key\\/cloak/i", ir.Matches("text", "key/cloak", "i")),
        ('text contains "a.b"', ir.Matches("text", "a\\.b", "i")),
        ('file matches "**/*.py"', ir.Glob("files", "**/*.py")),
        ("plugin x is down", ir.Compare("plugin.x.health", "==", "down")),
        ("plugin x is unavailable", ir.Compare("plugin.x.available", "==", False)),
        ("circuit x is half-open", ir.Compare("plugin.x.circuit", "==", "half-open")),
        ("caller is jira-orchestrator", ir.Compare("caller", "==", "jira-orchestrator")),
        ("urgency >= 8", ir.Compare("urgency", ">=", 8)),
        ("complexity == complex", ir.Compare("complexity", "==", "complex")),
        ('complexity in ["simple", "moderate"]', ir.OneOf("complexity", ("simple", "moderate"))),
        ('files contains "Dockerfile"', ir.Contains("files", "Dockerfile")),
        (
            "domain a and (domain b or not domain c)",
            ir.All((ir.Exists("domain.a"), ir.Any_((ir.Exists("domain.b"), ir.Not(ir.Exists("domain.c")))))),
        ),
    ],
)
def test_conditions(text, expected):
    assert cond_of(text) == expected


def test_actions_and_rule_metadata(tmp_path):
    (tmp_path / "a.arb").write_text(
        "rule r {\n  priority 7\n  when domain backend\n"
        "  then prefer a by 5\n       avoid b\n       require c\n       exclude d\n"
        "       collaborate e on auth after backend parallel\n       strategy saga\n"
        '       assert x = 3\n       retract y\n  because "reason"\n}\n'
    )
    bundle = load_rules([tmp_path], {})
    (rule,) = bundle.ruleset.rules
    assert rule.then == (
        ir.Prefer("a", 5.0),
        ir.Prefer("b", -10.0),
        ir.Require("c"),
        ir.Exclude("d"),
        ir.Collaborate("e", "auth", ("backend",), True),
        ir.SetStrategy("saga"),
        ir.AssertFact("x", 3),
        ir.RetractFact("y"),
    )
    assert (rule.priority, rule.reason, rule.source) == (7, "reason", ir.Source(str(tmp_path / "a.arb"), 1, 1))
    assert len(bundle.ruleset.hash) == 64


def test_vocabulary_and_weights_across_files(tmp_path):
    (tmp_path / "a.arb").write_text('domain d { keywords "x" }\ncapabilities p { d 0.5 }\n')
    (tmp_path / "b.arb").write_text('domain d { synonyms "y" -> "x" files "*.py" }\npattern q { regex /z+/i }\n')
    bundle = load_rules([tmp_path], {})
    assert bundle.vocabulary["domains"]["d"] == {"keywords": ["x"], "synonyms": {"y": "x"}, "globs": ["*.py"]}
    assert bundle.vocabulary["patterns"]["q"] == {"phrases": [], "regexes": [("z+", "i")]}
    assert bundle.capability_weights == {"p": {"d": 0.5}}


def test_missing_rules_dir_is_an_empty_ok_bundle(tmp_path):
    bundle = load_rules([tmp_path / "none"], {})
    assert bundle.ok and bundle.ruleset.rules == () and bundle.diagnostics == ()


def test_shipped_chains_compile_to_plans(repo, shipped_plugins):
    from arbiter.dsl.chains import BranchPlan, Param, Ref, steps

    bundle = load_rules([repo / "rules"], shipped_plugins)
    assert set(bundle.chains) == {
        "jira-delivery",
        "multi-plugin-analysis",
        "environment-deployment",
        "tenant-onboarding",
    }
    jira = bundle.chains["jira-delivery"]
    prepare, work, pr, docs = steps(jira.items)
    assert (prepare.command, prepare.timeout_ms, prepare.retry) == ("jira:prepare", 30_000, 2)
    assert prepare.args == (("issueKey", Param("issueKey")),)
    assert work.args == (("issueKey", Ref("prepare", ("issueKey",))),)
    assert pr.when == ir.Compare("work.status", "==", "completed")
    assert docs.args == (("prUrl", Ref("pr", ("pullRequestUrl",))),)
    assert jira.timeout_ms == 30 * 60_000
    assert bundle.chains["multi-plugin-analysis"].kind == "parallel"
    deploy = bundle.chains["environment-deployment"]
    assert isinstance(deploy.items[0], BranchPlan)
    assert deploy.items[0].when == ir.Compare("$environment", "==", "production")
    assert deploy.params == (("environment", "development"),)
    saga = bundle.chains["tenant-onboarding"]
    assert [s.compensate for s in steps(saga.items)] == [
        "delete-tenant",
        "remove-keycloak-config",
        "destroy-tenant-resources",
    ]
    assert steps(saga.items)[2].compensate_args == (("resourceIds", Ref("resources", ("createdResources",))),)
