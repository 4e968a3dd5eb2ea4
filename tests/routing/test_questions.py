"""Requests in a user's own words: possessors and elaborations give context, near spellings find
the plugins' words as written, and the no-route gate measures relevance against how much the
request says. The examples are written for these tests, not taken from any labelled set."""

from __future__ import annotations

import math

from arbiter.routing.clauses import CONTEXT, word_weights
from arbiter.routing.match import MIN_FIT, fit_of
from arbiter.routing.pipeline import Request


def weights_of(text: str) -> dict[str, float]:
    return dict(word_weights(text))


def test_a_possessor_and_its_modifiers_give_context():
    w = weights_of("summarise the marketing team's quarterly budget")
    assert w["market"] == w["team"] == CONTEXT
    assert w["quarter"] == w["budget"] == 1.0
    assert weights_of("it's the deploy that's broken")["deploy"] == 1.0  # a contraction owns nothing


def test_an_elaboration_gives_context_until_the_clause_ends():
    w = weights_of("build the login page, including the password reset flow; then style it")
    assert w["login"] == 1.0 and w["password"] == CONTEXT and w["style"] == 1.0
    assert weights_of("cache the reports such as the weekly sales summary")["sal"] == CONTEXT


def test_near_spellings_are_found_among_the_words_as_written(corpus_router):
    index = corpus_router.classifier.index
    assert "deploy" in index.lookup("deploymnet")  # "deployment", folded to its term
    assert index.lookup("blazr") == ["blazor"]  # five letters, one left out
    assert index.lookup("cyle") == ["cycle"]  # four letters, one left out
    assert index.lookup("dokr") == []  # nothing one letter longer spells it
    assert index.lookup("xzq") == []


def test_fit_grows_with_relevance_and_slower_than_the_request_shrinks():
    assert fit_of(2.0, 4.0) == 1.0
    assert fit_of(2.0, 16.0) == 0.5
    assert fit_of(2.0, 0.25) == 2.0  # a request of almost nothing is not rewarded for it
    assert math.isclose(fit_of(4.0, 16.0) / fit_of(2.0, 4.0), 1.0)


def test_a_question_one_plugin_covers_is_routed(corpus_router):
    result = corpus_router.route(Request("how do I get my zigbee motion sensors to show up in home assistant?"))
    assert result.decision.primary_plugin == "home-assistant-architect"
    assert result.scores[0].fit >= MIN_FIT


def test_a_request_about_something_else_is_not_routed_on_a_common_word_or_two(corpus_router):
    result = corpus_router.route(Request("what is the best way to fold a paper crane?"))
    assert result.decision.primary_plugin is None
    best = result.scores[0]
    assert best.relevance > 1.4 and best.fit < MIN_FIT  # enough words in common, too little of the request
