"""Shared fixtures: the repository, the shipped project and the public plugin corpus."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from arbiter.project.snapshot import build_snapshot
from arbiter.routing.pipeline import Router

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("ARBITER_CORPUS", REPO.parent / "shared" / "corpus" / "claude-plugins"))


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The real Claude Code plugin ecosystem the loader and router must handle as it is."""
    if not CORPUS.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"plugin corpus not found at {CORPUS} (set ARBITER_CORPUS)")
        pytest.skip(f"plugin corpus not found at {CORPUS} (set ARBITER_CORPUS)")
    return CORPUS


@pytest.fixture(scope="session")
def shipped_router(repo):
    return Router(build_snapshot(repo))


@pytest.fixture(scope="session")
def corpus_router(corpus, tmp_path_factory):
    empty = tmp_path_factory.mktemp("empty-project")
    return Router(build_snapshot(empty, [corpus]), engine="python")


@pytest.fixture
def project(repo, tmp_path):
    """A writable copy of the shipped project."""
    for part in ("plugins", "rules", "configs"):
        shutil.copytree(repo / part, tmp_path / part)
    return tmp_path


# -- perf tests: timing and memory figures, reported apart ------------------------------------

OUTCOME_ORDER = ("error", "failed", "xpassed", "xfailed", "skipped", "passed")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A "perf tests" section: each test marked ``perf`` with its outcome, how long its body ran,
    and the figures it recorded (``record_property``), so a timing or memory result is read
    apart from the behaviour tests."""
    tests: dict[str, dict] = {}
    for category, reports in terminalreporter.stats.items():
        for report in reports:
            if getattr(report, "when", None) is None or "perf" not in getattr(report, "keywords", {}):
                continue
            test = tests.setdefault(report.nodeid, {"outcomes": set(), "duration": 0.0, "call": None, "figures": []})
            test["outcomes"].add(category or "passed")
            test["duration"] += report.duration
            if report.when == "call":
                test["call"] = report.duration
                test["figures"] = list(report.user_properties)
    if not tests:
        return
    terminalreporter.section("perf tests")
    for nodeid, test in tests.items():
        outcome = next((o for o in OUTCOME_ORDER if o in test["outcomes"]), "passed")
        seconds = test["call"] if test["call"] is not None else test["duration"]
        figures = "  ".join(f"{name}={value}" for name, value in test["figures"])
        terminalreporter.write_line(f"{outcome:<8} {seconds:8.2f}s  {nodeid}" + (f"  {figures}" if figures else ""))
