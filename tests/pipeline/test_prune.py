"""``arbiter decisions prune``: the decision log's retention, applied from the command line."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from click.testing import CliRunner, Result

from arbiter.cli import main
from arbiter.store import database as state
from arbiter.store import models

URL = "sqlite:///.arbiter/state.db"


def run(project: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--root", str(project), *args])


def seed(project: Path, days: list[int]) -> None:
    """One decision per entry, that many days old (plus an hour), request id ``day<N>``."""
    state.open_store(URL, project)
    try:
        for day in days:
            models.RoutingDecision.create(
                request_id=f"day{day}", origin="cli", created_at=models.now() - dt.timedelta(days=day, hours=1)
            )
    finally:
        state.close_store()


def kept(project: Path) -> list[str]:
    state.open_store(URL, project)
    try:
        query = models.RoutingDecision.select().order_by(models.RoutingDecision.created_at.desc())
        return [row.request_id for row in query]
    finally:
        state.close_store()


def test_prune_by_age_and_count_with_a_dry_run_first(project):
    seed(project, list(range(10)))
    dry = run(project, "decisions", "prune", "--older-than", "7d", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout) == {"pruned": 3, "dryRun": True} and len(kept(project)) == 10
    assert run(project, "decisions", "prune", "--older-than", "7d").stdout == "pruned 3 decision(s)\n"
    assert kept(project) == [f"day{d}" for d in range(7)]
    both = run(project, "decisions", "prune", "--older-than", "5d", "--keep", "2", "--json")
    assert json.loads(both.stdout) == {"pruned": 5, "dryRun": False} and kept(project) == ["day0", "day1"]
    assert run(project, "decisions", "prune", "--keep", "5", "--dry-run").stdout == "would prune 0 decision(s)\n"


def test_prune_without_limits_applies_the_configured_retention(project):
    seed(project, [0, 1, 2, 3])
    (project / "configs" / "state.yaml").write_text(f"database: {URL}\nretention:\n  max_age: 2d\n  max_rows: null\n")
    result = run(project, "decisions", "prune")
    assert result.exit_code == 0, result.output
    assert result.stdout == "pruned 2 decision(s)\n" and kept(project) == ["day0", "day1"]
    (project / "configs" / "state.yaml").write_text(f"database: {URL}\nretention:\n  max_age: null\n  max_rows: 1\n")
    assert run(project, "decisions", "prune").stdout == "pruned 1 decision(s)\n" and kept(project) == ["day0"]


def test_prune_usage_errors(project):
    (project / "configs" / "state.yaml").write_text(f"database: {URL}\nretention:\n  max_age: null\n  max_rows: null\n")
    off = run(project, "decisions", "prune")
    assert off.exit_code == 2 and "sets no retention" in off.output
    bad = run(project, "decisions", "prune", "--older-than", "7 days")
    assert bad.exit_code == 2 and "not a duration" in bad.output
    assert run(project, "decisions", "prune", "--keep", "-1").exit_code == 2


def test_listing_decisions_is_unchanged(project):
    seed(project, [0, 1, 2])
    listed = run(project, "decisions", "--last", "2", "--json")
    assert listed.exit_code == 0, listed.output
    assert [row["requestId"] for row in json.loads(listed.stdout)] == ["day0", "day1"]
