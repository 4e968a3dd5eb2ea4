"""Permission rules: deny wins, default deny, wildcards as event topics read them, and matching
that cannot stall."""

from __future__ import annotations

import random
import time

import pytest

from arbiter.security.permissions import (
    MAX_PATTERN,
    SERVICE_SEPARATOR,
    TOPIC_SEPARATOR,
    Rule,
    matches,
    pattern_problem,
)
from arbiter.wire.topics import topic_matches

S, T = SERVICE_SEPARATOR, TOPIC_SEPARATOR

MATCHES = [
    # pattern, name, separator, expected
    ("fastapi-backend", "fastapi-backend", S, True),
    ("fastapi-backend", "fastapi-backend.x", S, False),  # no prefix matching
    ("arbiter.route", "arbiter.route", S, True),
    ("arbiter.route", "arbiter.status", S, False),
    ("arbiter.*", "arbiter.route", S, True),
    ("arbiter.*", "arbiter", S, False),  # `*` is exactly one token
    ("arbiter.*", "arbiter.route.x", S, False),
    ("*.route", "arbiter.route", S, True),
    ("*", "fastapi-backend", S, True),
    ("*", "arbiter.route", S, False),
    ("arbiter.**", "arbiter", S, True),  # `**` matches zero tokens too
    ("arbiter.**", "arbiter.route", S, True),
    ("arbiter.**", "arbiter.route.deep.down", S, True),
    ("arbiter.**", "arbiterx", S, False),
    ("**", "anything.at.all", S, True),
    ("a.**.b", "a.b", S, True),
    ("a.**.b", "a.x.y.b", S, True),
    ("a.**.b", "a.x.y.c", S, False),
    ("a.**.*.c.**.d", "a.x.c.d", S, True),
    ("a.**.*.c.**.d", "a.c.d", S, False),  # `*` still needs its token
    ("a.**.x.*.**.z", "a.x.q.x.r.z", S, True),
    ("**.x.y", "x.x.y", S, True),  # the earliest run is not always the one that ends well
    ("routing/**", "routing", T, True),
    ("routing/**", "routing/decisions/plugin", T, True),
    ("routing/*", "routing/decisions", T, True),
    ("routing/*", "routing/decisions/plugin", T, False),
    ("routing/**", "routing.decisions", S, False),  # the separator decides what a token is
    ("routing.**", "routing/decisions", T, False),
    ("plugin/*/events", "plugin/jira/events", T, True),
    ("plugin/*/events", "plugin/jira/other", T, False),
    ("jira-*", "jira-x", S, True),  # `*` matches any characters within a token, as in topics
    ("jira-*", "jira-", S, True),
    ("jira-*", "jira", S, False),
    ("jira-*", "jira-x.y", S, False),  # but never across a separator
    ("arbiter.r*e", "arbiter.route", S, True),
    ("arbiter.r*e", "arbiter.rout", S, False),
    ("plugin/jira-*/events", "plugin/jira-orchestrator/events", T, True),
    ("plugin/jira-*/events", "plugin/home-assistant/events", T, False),
    ("plugin/*", "plugin/x", S, True),  # one service token that holds a `/`
    ("plugin/*", "plugin.x", S, False),
    ("**.*-worker", "fleet.jira-worker", S, True),
    ("a.**.j*.**.z", "a.x.jira.y.z", S, True),
    ("a.**.j*.**.z", "a.x.y.z", S, False),
]


@pytest.mark.parametrize(("pattern", "name", "separator", "expected"), MATCHES)
def test_matching_token_by_token(pattern, name, separator, expected):
    assert matches(pattern, name, separator) is expected


RULES = [
    # allow, deny, name, separator, expected
    ((), (), "arbiter.route", S, False),  # empty allow: nothing allowed
    ((), ("arbiter.route",), "arbiter.status", S, False),  # deny alone allows nothing
    (("arbiter.*",), (), "arbiter.route", S, True),
    (("arbiter.*",), ("arbiter.admin",), "arbiter.admin", S, False),  # deny wins
    (("arbiter.*",), ("arbiter.admin",), "arbiter.route", S, True),
    (("arbiter.route",), ("**",), "arbiter.route", S, False),  # deny wins over an exact allow
    (("routing/**",), ("routing/internal/**",), "routing/decisions", T, True),
    (("routing/**",), ("routing/internal/**",), "routing/internal", T, False),
    (("routing/**",), ("routing/internal/**",), "routing/internal/audit", T, False),
    (("routing/**",), (), "orchestration/chain", T, False),
]


@pytest.mark.parametrize(("allow", "deny", "name", "separator", "expected"), RULES)
def test_rules_deny_wins_and_default_deny(allow, deny, name, separator, expected):
    assert Rule(allow, deny).permits(name, separator) is expected


PROBLEMS = [
    # pattern, separator, words in the message
    ("", S, "empty pattern"),
    ("a" * (MAX_PATTERN + 1), S, f"at most {MAX_PATTERN}"),
    ("arbiter..route", S, "empty token"),
    ("routing/", T, "empty token"),
    ("routing.**", T, "'**' inside the token 'routing.**'"),  # a service separator in a topic rule
    ("plugin/**", S, "'**' inside the token 'plugin/**'"),  # a topic separator in a service rule
    ("a.b**", S, "'**' inside the token 'b**' of 'a.b**'"),
    ("***", S, "'**' inside"),
    (5, S, "a pattern is a string"),
]


@pytest.mark.parametrize(("pattern", "separator", "words"), PROBLEMS)
def test_bad_patterns_are_named_with_a_hint(pattern, separator, words):
    problem = pattern_problem(pattern, separator)
    assert problem is not None
    message, hint = problem
    assert words in message and hint


@pytest.mark.parametrize(
    ("pattern", "separator"),
    [
        ("fastapi-backend", S),
        ("arbiter.*", S),
        ("**", S),
        ("routing/**", T),
        ("a" * MAX_PATTERN, S),
        ("jira-*", S),
        ("plugin/jira-*/events", T),
        ("*-worker.**", S),
    ],
)
def test_good_patterns_have_no_problem(pattern, separator):
    assert pattern_problem(pattern, separator) is None


def test_long_patterns_are_refused():
    with pytest.raises(ValueError):
        Rule(allow=("a" * (MAX_PATTERN + 1),))
    with pytest.raises(ValueError):
        Rule(deny=("*." * 200,))


def test_topic_rules_match_as_subscriptions_do():
    """A rule and a subscription written alike cover the same topics."""
    rng = random.Random(11)
    for _ in range(2000):
        pattern = "/".join(rng.choice(["a", "b", "*", "**", "a*", "*b", "a*b"]) for _ in range(rng.randint(1, 5)))
        topic = "/".join(rng.choice(["a", "b", "ab", "ba", "aab", ""]) for _ in range(rng.randint(1, 6)))
        assert matches(pattern, topic, T) is topic_matches(pattern, topic), (pattern, topic)


def test_rules_render_as_plain_lists():
    assert Rule(("a.*",), ("a.b",)).to_json() == {"allow": ["a.*"], "deny": ["a.b"]}


def _seconds(pattern: str, name: str) -> float:
    start = time.perf_counter()
    assert not matches(pattern, name, S)
    return time.perf_counter() - start


ADVERSARIAL = [  # each leaves a run between two `**` to be searched for along the whole name
    "**." + ".".join(["*"] * 100) + ".b.**",  # a long run of `*` that fails only at its end
    ".".join(["**.a"] * 49) + ".**.b.**",  # the classic backtracking blow-up: `**` between literals
    "**." + ".".join(["a"] * 100) + ".b.**",  # a long literal run, almost found everywhere
]


@pytest.mark.parametrize("pattern", ADVERSARIAL)
def test_matching_time_is_linear_in_the_name(pattern):
    assert len(pattern) <= MAX_PATTERN
    short, long = ".".join(["a"] * 20_000), ".".join(["a"] * 80_000)
    small = min(_seconds(pattern, short) for _ in range(3))
    big = min(_seconds(pattern, long) for _ in range(3))
    # A name four times longer takes about four times as long; backtracking would take far more
    # (or never end). Loose bounds: the machine is shared.
    assert big < 12 * small + 0.05
    assert big < 2.0


def _reference(pattern: list[str], name: list[str]) -> bool:
    """The definition, read literally (exponential, for small inputs only)."""
    if not pattern:
        return not name
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_reference(rest, name[skip:]) for skip in range(len(name) + 1))
    return bool(name) and head in ("*", name[0]) and _reference(rest, name[1:])


def test_matching_agrees_with_the_definition():
    rng = random.Random(7)
    for _ in range(3000):
        pattern = [rng.choice(["a", "b", "*", "**"]) for _ in range(rng.randint(1, 6))]
        name = [rng.choice(["a", "b", "c"]) for _ in range(rng.randint(1, 7))]
        assert matches(".".join(pattern), ".".join(name), S) is _reference(pattern, name), (pattern, name)


@pytest.mark.parametrize(
    ("subscription", "granted"),
    [
        ("routing/decision", True),  # every topic starting with it is routing/... and none internal
        ("routing/", False),  # would deliver routing/internal/...
        ("routing/int", False),  # could begin routing/internal/...
        ("routing/*/x", False),  # would deliver routing/internal/x
        ("routing/internal/keys", False),
        ("orchestration/", False),  # not allowed at all
        ("", False),  # everything, the denied topics among it
        ("routing", False),  # "routingX/..." is not under routing/**
    ],
)
def test_a_subscription_is_granted_only_when_every_topic_it_delivers_may_be_read(subscription, granted):
    rule = Rule(allow=("routing/**",), deny=("routing/internal/**",))
    assert rule.grants_subscription(subscription) is granted


def test_a_wildcard_allow_rule_never_grants_a_prefix_wider_than_itself():
    assert not Rule(allow=("plugin/*/events",)).grants_subscription("plugin/")
    assert Rule(allow=("**",)).grants_subscription("")
    assert not Rule(allow=("**",), deny=("**/secret",)).grants_subscription("plugin/billing/")
