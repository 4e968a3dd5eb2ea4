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


def test_a_parallel_chain_keeps_its_failure_option(tmp_path):
    (tmp_path / "c.arb").write_text(
        "chain a parallel fail-fast {\n  step x: p c\n}\nchain b parallel {\n  step x: p c\n}\n"
        "chain s sequential {\n  step x: p c\n}\n"
    )
    chains = load_rules([tmp_path], {}).chains
    assert (chains["a"].on_failure, chains["b"].on_failure, chains["s"].on_failure) == (
        "fail-fast",
        "wait-all",
        "wait-all",
    )


def test_bindings_hold_every_declared_parameter_and_the_rules_lines(tmp_path, shipped_plugins):
    from arbiter.dsl.bindings import Binding

    (tmp_path / "a.arb").write_text(
        "parameters jira-orchestrator work {\n  issueKey from /([A-Z]+-\\d+)/, /a(b/, /nogroup/\n}\n"
        'parameters ahling-command-center deploy-kubernetes {\n  namespace default "dev"\n}\n'
    )
    (tmp_path / "b.arb").write_text(
        "parameters ahling-command-center deploy-kubernetes {\n  namespace from /to (\\w+)/i\n"
        "  image from /image (\\S+)/\n  replicas from /(\\d+) replicas/ default 1\n}\n"
    )
    bindings = load_rules([tmp_path], shipped_plugins).bindings
    (work,) = bindings[("jira-orchestrator", "jira:work")]  # found without the prefix, keyed as declared
    assert (work.name, work.type, work.required) == ("issueKey", "string", True)
    assert [p.pattern for p in work.regexes] == ["([A-Z]+-\\d+)"]  # the broken and the groupless are left out
    assert work.source == ir.Source(str(tmp_path / "a.arb"), 2, 3)
    namespace, image, replicas = bindings[("ahling-command-center", "deploy-kubernetes")]
    assert (namespace.default, namespace.regexes, namespace.required) == ("dev", (), True)  # the first line wins
    assert image.regexes[0].pattern == "image (\\S+)" and image.required is False
    assert replicas == Binding("replicas", "string", False, replicas.regexes, 1, replicas.source)
    assert bindings[("lobbi-platform-manager", "setup-sso")] == (
        Binding("application", "string", True),
        Binding("redirectUri", "string", True),
    )
    assert ("lobbi-platform-manager", "platform-status") not in bindings  # it declares no parameters


def test_regex_flags_of_bindings(tmp_path):
    import re

    (tmp_path / "a.arb").write_text("parameters p c {\n  x from /a(.)/ims\n}\n")
    (x,) = load_rules([tmp_path], {}).bindings[("p", "c")]
    assert x.regexes[0].flags & (re.I | re.M | re.S) == re.I | re.M | re.S
