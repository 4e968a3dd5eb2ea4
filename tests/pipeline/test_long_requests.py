"""Long requests: routing reads a bounded head of the text (``max_text_chars``), says so in the
decision, and the decision log stores a bounded head with the whole text's length and hash."""

from __future__ import annotations

import hashlib
import json
import shutil
from unittest import mock

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbiter.cli import main
from arbiter.project.configs import load_configs
from arbiter.project.snapshot import build_snapshot
from arbiter.routing import pipeline
from arbiter.routing.classify import WORD_SLACK, bounded_text
from arbiter.routing.decide import Decision
from arbiter.routing.pipeline import Request, Router
from arbiter.store import database as state
from arbiter.store import decisions as record
from arbiter.store import models

FIRST_PARAGRAPH = "Build a FastAPI endpoint with MongoDB and Keycloak auth."
LOG_LINE = "2024-05-01 12:00:00 INFO worker 7 handled the request in 12 ms with status 200\n"
MEGABYTE = 1_000_000


def pasted_log(chars: int) -> str:
    """The first paragraph, then a log pasted after it, ``chars`` characters in all."""
    text = FIRST_PARAGRAPH + "\n\n" + LOG_LINE * (chars // len(LOG_LINE) + 1)
    return text[:chars]


def run(project, *args):
    return CliRunner().invoke(main, ["--root", str(project), *args])


# ---------------------------------------------------------------- the cut


def test_bounded_text_keeps_short_text_and_cuts_long_text_at_a_word_boundary():
    assert bounded_text("short request", 100) == "short request"
    text = "word " * 100  # 500 characters
    cut = bounded_text(text, 103)
    assert cut == text[:99]  # ends before the space that precedes the word cut at 103
    assert bounded_text("x" * 500, 100) == "x" * 100  # no whitespace near: cut at the limit
    far = "y" * 300 + " " + "z" * (WORD_SLACK + 50)
    assert bounded_text(far, 300 + WORD_SLACK + 10) == far[: 300 + WORD_SLACK + 10]  # whitespace too far back


def test_max_text_chars_has_a_default_and_refuses_nonsense(tmp_path):
    assert load_configs(tmp_path)[0]["routing"]["max_text_chars"] == 4000
    (tmp_path / "routing.yaml").write_text("max_text_chars: 0\n")
    configs, diags = load_configs(tmp_path)
    assert any(d.severity == "error" and "max_text_chars" in d.message for d in diags)
    assert configs["routing"]["max_text_chars"] == 4000  # an invalid file keeps the defaults


# ---------------------------------------------------------------- routing a megabyte


def test_megabyte_request_routes_like_its_first_paragraph(shipped_router):
    text = pasted_log(MEGABYTE)
    alone = shipped_router.route(Request(FIRST_PARAGRAPH))
    long = shipped_router.route(Request(text))
    assert alone.decision.primary_plugin == "fastapi-backend"
    assert long.decision.primary_plugin == alone.decision.primary_plugin
    limit = shipped_router.max_text_chars
    read = long.classification.text
    assert len(read) <= limit and text.startswith(read) and text[len(read)].isspace()  # cut between words
    assert long.classification.facts()["text"] == read
    data = long.to_json()
    assert data["classification"]["textTruncated"] == {"chars": MEGABYTE, "readChars": len(read)}
    assert data["userInput"] == text  # the request itself is not changed, only what routing read
    assert alone.to_json()["classification"]["textTruncated"] is None  # always the key; null when whole


def test_words_past_the_cut_are_not_read_by_rules(shipped_router):
    limit = shipped_router.max_text_chars
    head = "paint the fence in the garden " * (limit // 30 + 10)
    rule = "jira-vocabulary-prefers-orchestrator"  # when ... or text matches /\b[A-Z][A-Z0-9]+-\d+\b/
    inside = shipped_router.route(Request("PROJ-123 " + head))
    past = shipped_router.route(Request(head + "PROJ-123"))
    assert rule in {f.rule for f in inside.evaluation.firings}
    assert rule not in {f.rule for f in past.evaluation.firings}
    assert "PROJ-123" not in past.classification.text


def test_megabyte_request_from_the_command_line_is_routed_noted_and_stored_cut(project):
    text = pasted_log(MEGABYTE)
    alone = json.loads(run(project, "route", FIRST_PARAGRAPH, "--json", "--no-record").stdout)
    result = run(project, "route", text, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["routingDecision"]["primaryPlugin"] == alone["routingDecision"]["primaryPlugin"] == "fastapi-backend"
    truncated = data["classification"]["textTruncated"]
    assert truncated["chars"] == MEGABYTE and 0 < truncated["readChars"] <= 4000

    state.open_store("sqlite:///.arbiter/state.db", project)
    try:
        row = models.RoutingDecision.get(models.RoutingDecision.request_id == data["requestId"])
    finally:
        state.close_store()
    assert row.user_input == text[: record.MAX_STORED_CHARS]
    assert row.classification["storedInput"] == {
        "chars": MEGABYTE,
        "storedChars": record.MAX_STORED_CHARS,
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    assert row.classification["textTruncated"] == truncated

    digest = hashlib.sha256(text.encode()).hexdigest()
    listing = run(project, "decisions", "--last", "5")
    assert listing.exit_code == 0, listing.output
    assert f"… (1,000,000 characters, sha256 {digest[:12]}…)" in listing.stdout
    shown = run(project, "explain", "--request", data["requestId"])
    assert shown.exit_code == 0, shown.output
    assert f"… (1,000,000 characters, sha256 {digest})" in shown.stdout
    assert f"read the first {truncated['readChars']:,} of 1,000,000 characters" in shown.stdout


def test_explain_says_the_text_was_cut(project):
    result = run(project, "explain", pasted_log(20_000), "--no-record")
    assert result.exit_code == 0, result.output
    assert "of 20,000 characters (max_text_chars" in result.stdout
    assert '… (20,000 characters)"' in result.stdout  # the header: the text read, then its length


# ---------------------------------------------------------------- the stored row


def test_decision_row_cuts_the_text_and_keeps_length_and_hash_without_touching_the_decision(shipped_router):
    text = "é" + pasted_log(50_000)
    data = shipped_router.route(Request(text)).to_json(trace=False)
    classification = dict(data["classification"])
    row = record.decision_row(data, "broker")
    assert row["user_input"] == text[: record.MAX_STORED_CHARS]
    stored = row["classification"]["storedInput"]
    assert stored == {
        "chars": len(text),
        "storedChars": record.MAX_STORED_CHARS,
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }
    assert data["classification"] == classification and data["userInput"] == text  # the reply's JSON is untouched
    template = record.RowTemplate.of(data, "broker")  # the broker's path: the same row
    assert template.first[record.ROW_COLUMNS.index("user_input")] == text[: record.MAX_STORED_CHARS]
    short = record.decision_row(shipped_router.route(Request(FIRST_PARAGRAPH)).to_json(False), "cli")
    assert short["user_input"] == FIRST_PARAGRAPH and "storedInput" not in short["classification"]


def test_a_text_json_allows_but_utf8_cannot_encode_is_still_hashed():
    text = "\ud800" * (record.MAX_STORED_CHARS + 1)  # a lone surrogate, as a JSON "\\ud800" escape reads
    row = record.decision_row({"userInput": text, "classification": {}}, "cli")
    assert row["classification"]["storedInput"]["chars"] == len(text)


def test_shown_input_marks_cut_text_only():
    whole = {"userInput": "deploy it", "classification": {}}
    assert record.shown_input(whole) == "deploy it"
    cut = {
        "userInput": "deploy",
        "classification": {"storedInput": {"chars": 5000, "storedChars": 6, "sha256": "ab" * 32}},
    }
    assert record.shown_input(cut) == f"deploy… (5,000 characters, sha256 {'ab' * 32})"
    assert record.shown_input(cut, digits=8) == "deploy… (5,000 characters, sha256 abababab…)"


# ---------------------------------------------------------------- any text, any length

SMALL_LIMIT = 200


@pytest.fixture(scope="module")
def small_limit_router(repo, tmp_path_factory):
    """The shipped project with routing reading at most SMALL_LIMIT characters, so that the
    generated texts are cut often."""
    root = tmp_path_factory.mktemp("small-limit")
    for part in ("plugins", "rules", "configs"):
        shutil.copytree(repo / part, root / part)
    routing = root / "configs" / "routing.yaml"
    routing.write_text(routing.read_text().replace("max_text_chars: 4000", f"max_text_chars: {SMALL_LIMIT}"))
    router = Router(build_snapshot(root))
    assert router.max_text_chars == SMALL_LIMIT
    yield router
    router.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    head=st.text(max_size=300),
    piece=st.text(min_size=1, max_size=30),
    times=st.integers(min_value=0, max_value=40_000),
)
def test_any_text_of_any_length_gets_a_decision_reading_at_most_the_limit(small_limit_router, head, piece, times):
    text = head + piece * times  # up to about 1.2 million characters
    read: list[int] = []
    real = pipeline.classify

    def classify(text, *args, **kwargs):
        read.append(len(text))
        return real(text, *args, **kwargs)

    with mock.patch.object(pipeline, "classify", classify):
        result = small_limit_router.route(Request(text))
    assert isinstance(result.decision, Decision)
    assert read and max(read) <= SMALL_LIMIT
    facts = result.classification.facts()
    assert len(facts["text"]) <= SMALL_LIMIT and text.startswith(facts["text"])
    assert all(len(f.facts.get("text") or "") <= SMALL_LIMIT for f in result.evaluation.firings)
    truncated = result.to_json(trace=False)["classification"].get("textTruncated")
    assert (truncated is not None) == (len(text) > SMALL_LIMIT)
    if truncated:
        assert truncated == {"chars": len(text), "readChars": len(facts["text"])}
