"""Which words say what is wanted: main-clause words count fully, context phrases at a fraction,
and the plugin that owns the deliverable leads."""

from __future__ import annotations

from arbiter.routing.clauses import CONTEXT, term_weights, word_weights
from arbiter.routing.match import Health, health_of, match
from arbiter.routing.pipeline import Request
from arbiter.routing.text_index import terms

NAMED_AS_SOURCE = "Build a Jira dashboard from the sprint report the project management plugin generated"


def weights_of(text: str) -> dict[str, float]:
    return dict(word_weights(text))


def test_main_clause_words_count_fully_and_context_phrases_less():
    w = weights_of("make a slide deck out of last sprint's tickets")
    assert w["slide"] == w["deck"] == 1.0
    assert w["sprint"] == w["ticket"] == CONTEXT


def test_every_opener_and_the_end_of_a_clause():
    for opener in ("for", "with", "from", "based on", "using", "about", "in"):
        assert weights_of(f"build a dashboard {opener} grafana")["grafana"] == CONTEXT, opener
    w = weights_of("draw the network diagram of our home lab, then list the cameras")
    assert w["home"] == CONTEXT and w["camera"] == 1.0  # the comma ends the context phrase
    assert weights_of("a bill of materials")["material"] == 1.0  # "of" before no possessive is part of a name


def test_into_names_the_deliverable():
    w = weights_of("put the results of the load test into a spreadsheet for finance")
    assert w["spreadsheet"] == 1.0 and w["load"] == CONTEXT and w["finance"] == CONTEXT


def test_a_relative_clause_without_that_gives_context_until_its_verb():
    w = weights_of("turn the scope document the engagement toolkit wrote into a project plan")
    assert w["scope"] == w["docu"] == w["project"] == w["plan"] == 1.0  # stems, as the index reads them
    assert w["engage"] == w["toolkit"] == w["wrote"] == CONTEXT
    w = weights_of("push the service our scaffold produced through the staged deploy pipeline")
    assert w["scaffold"] == CONTEXT and w["stag"] == w["pipeline"] == 1.0  # it ends after its verb


def test_a_verb_and_its_object_are_not_a_relative_clause():
    for text in (
        "deploy the app to azure",  # the first word of a clause is its verb
        "roll back the release",  # a particle belongs to its verb
        "lint this plan file, i think tasks are missing their metadata",  # an -ing form is a verb
        "i want failed builds to ping my session",  # so is the word after "to"
    ):
        assert all(weight == 1.0 for _, weight in word_weights(text)), text


def test_weights_cover_every_term_the_index_reads():
    for text in ("we're moving release/3.8 to prod", "fastapi enpoint for uploading files", "K8s + Helm: deploy it!"):
        assert set(terms(text)) <= set(term_weights(text)), text
    weights = term_weights("slide deck from tickets")
    assert weights["slide deck"] == 1.0 and weights["deck ticket"] == CONTEXT  # a bigram weighs its lesser word


def test_the_owner_of_the_deliverable_leads(corpus_router):
    result = corpus_router.route(Request("draw a network diagram of my home assistant setup with the cameras"))
    assert result.decision.primary_plugin == "drawio-diagramming"
    lead = next(s for s in result.classification.relevance if s.name == "home-assistant-architect")
    assert "home assistant" in lead.context or "assistant" in lead.context


def test_a_plugin_the_request_names_only_as_context_loses_the_lead(corpus_router):
    result = corpus_router.route(Request(NAMED_AS_SOURCE))
    assert result.decision.primary_plugin == "jira-orchestrator"
    named = result.score_of("project-management-plugin")
    assert named.lead < 0.8 and result.score_of("jira-orchestrator").lead > named.lead
    assert "project-management-plugin" in {s.plugin for s in result.scores[:3]}  # still a collaborator


def test_two_swapped_letters_in_a_short_word_still_name_the_plugin(corpus_router):
    assert corpus_router.classifier.index.lookup("jria") == ["jira"]
    assert corpus_router.classifier.index.lookup("xzq") == []  # three letters: no near spellings


def test_a_plugin_no_live_worker_serves_is_scored_but_not_eligible(corpus_router):
    result = corpus_router.route(Request("create a jira issue for the login bug"))
    assert result.decision.primary_plugin == "jira-orchestrator"
    health = health_of({}, {}, ["jira-orchestrator"])
    assert health["jira-orchestrator"] == Health(served=False) and not health["jira-orchestrator"].usable
    unserved = corpus_router.route(Request("create a jira issue for the login bug"), health)
    jira = unserved.score_of("jira-orchestrator")
    assert not jira.eligible and jira.reason == "no live worker serves it" and jira.score > 0
    assert unserved.decision.primary_plugin != "jira-orchestrator"
    assert "jira-orchestrator" in unserved.decision.unserved
    assert any("no live worker serves it" in note for note in unserved.decision.notes)
    scores = match(unserved.classification, corpus_router.snapshot.plugins, health=health)
    assert [s.plugin for s in scores if not s.eligible] == ["jira-orchestrator"]


def test_explain_shows_the_words_that_made_the_lead_main_and_context_apart(corpus_router):
    from arbiter.routing.explain import render

    shown = render(corpus_router.route(Request("draw a network diagram of my home assistant setup with the cameras")))
    line = next(line for line in shown.splitlines() if line.strip().startswith("lead words"))
    assert "drawio-diagramming:" in line and "diagram" in line.split(";")[0]


def test_explain_shows_what_context_words_cost_a_plugin(corpus_router):
    from arbiter.routing.explain import render

    shown = render(corpus_router.route(Request(NAMED_AS_SOURCE)))
    line = next(line for line in shown.splitlines() if line.strip().startswith("project-management-plugin"))
    assert "x0.7" in line and "for context words" in line


def test_the_lead_factor_is_one_for_main_clause_evidence_and_falls_with_context():
    from arbiter.routing.match import lead_of

    assert lead_of(2.0, 2.0) == 1.0 and lead_of(0.0, 0.0) == 1.0
    assert lead_of(3.0, 0.0) == 0.5  # all of it context: sqrt(1 / 4)
    assert lead_of(3.0, 1.0) > lead_of(3.0, 0.5)
