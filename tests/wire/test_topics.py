"""Topic wildcards: the documented semantics, agreement with a regular-expression reading of
them on generated cases, and no pattern whose matching blows up."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from arbiter.wire.topics import MAX_PATTERN, acceptable_pattern, topic_matches


def test_documented_examples():
    assert topic_matches("plugin/*/events", "plugin/jira-orchestrator/events")
    assert not topic_matches("plugin/*/events", "plugin/a/b/events")
    assert topic_matches("plugin/jira-*/events", "plugin/jira-orchestrator/events")
    assert not topic_matches("plugin/jira-*/events", "plugin/home-assistant/events")
    assert topic_matches("a/**/b", "a/b") and topic_matches("a/**/b", "a/x/y/b")
    assert not topic_matches("a/**/b", "a/x/y/c") and not topic_matches("a/**/b", "b")
    assert topic_matches("orchestration/**", "orchestration")
    assert topic_matches("orchestration/**", "orchestration/chain/deploy/42/completed")
    assert not topic_matches("orchestration/**", "orchestrationx/y")
    assert topic_matches("**/circuit-breaker", "plugin/x/circuit-breaker") and topic_matches("**", "")
    assert topic_matches("a/**/b/**/c", "a/1/b/2/3/c") and not topic_matches("a/**/b/**/c", "a/1/c/b")
    assert topic_matches("*a*b*", "xxaxxbxx") and not topic_matches("*a*b*", "xxbxxaxx")


segment = st.text(alphabet="ab", max_size=3)
pattern_segment = st.one_of(
    st.just("**"), st.text(alphabet="ab*", min_size=0, max_size=3).filter(lambda s: "**" not in s)
)


@settings(max_examples=400, deadline=None)
@given(st.lists(pattern_segment, min_size=1, max_size=4), st.lists(segment, min_size=1, max_size=5))
def test_agrees_with_a_regular_expression_reading(pattern_segments, topic_segments):
    pattern, topic = "/".join(pattern_segments), "/".join(topic_segments)
    expected = _regex_semantics(pattern_segments, topic_segments)
    assert topic_matches(pattern, topic) == expected, (pattern, topic)


def _regex_semantics(pattern_segments: list[str], topic_segments: list[str]) -> bool:
    """Segment-list matching by exhaustive search (small inputs only)."""

    def seg(glob: str, text: str) -> bool:
        return re.fullmatch("[^/]*".join(re.escape(p) for p in glob.split("*")), text) is not None

    def match(i: int, j: int) -> bool:
        if i == len(pattern_segments):
            return j == len(topic_segments)
        if pattern_segments[i] == "**":
            return any(match(i + 1, k) for k in range(j, len(topic_segments) + 1))
        return j < len(topic_segments) and seg(pattern_segments[i], topic_segments[j]) and match(i + 1, j + 1)

    return match(0, 0)


def test_patterns_that_make_a_backtracking_matcher_stall_are_answered_in_passing():
    """16 stars and a letter against a 60-character topic: a backtracking regex took seconds."""
    pattern, topic = "*" * 16 + "x", "y" * 60
    assert not topic_matches(pattern, topic)
    assert not topic_matches("/".join(["**"] * 8 + ["x"]), "/".join(["y"] * 60))
    assert topic_matches("*" * 16 + "y", topic)


def test_pattern_length_is_bounded():
    assert acceptable_pattern("*" * MAX_PATTERN) and not acceptable_pattern("*" * (MAX_PATTERN + 1))
