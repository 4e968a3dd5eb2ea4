"""One meaning of a file glob wherever Arbiter matches paths (classify, match, team, engines)."""

from __future__ import annotations

from fnmatch import fnmatch

import pytest

from arbiter.project.model import Component, Plugin
from arbiter.routing import globs
from arbiter.routing.engine import semantics
from arbiter.routing.team import AgentRegistry
from arbiter.routing.text_index import normalize


@pytest.mark.parametrize(
    "pattern,path,expected",
    [
        ("*.py", "main.py", True),
        ("*.py", "src/api/main.py", True),  # no slash: the file name in any folder
        ("src/*.py", "src/main.py", True),
        ("src/*.py", "src/api/main.py", False),  # * stays within one folder
        ("src/*.py", "lib/src/main.py", False),  # with a slash: from the start of the path
        ("src/**/*.py", "src/main.py", True),  # **/ spans no folder too
        ("src/**/*.py", "src/a/b/main.py", True),
        ("**/main.py", "main.py", True),
        ("**/charts/**", "deploy/charts/app/values.yaml", True),
        ("?.py", "a/b.py", True),
        ("?.py", "ab.py", False),
        ("[ab].py", "a.py", False),  # brackets stand for themselves
        ("[ab].py", "[ab].py", True),
        ("*.PY", "main.py", False),  # case matters
        ("Dockerfile", "services/api/Dockerfile", True),
    ],
)
def test_semantics(pattern, path, expected):
    assert globs.matches_any(pattern, [path]) is expected
    assert globs.matches_any(pattern, ["other/file.txt", path]) is expected


@pytest.mark.parametrize(
    "pattern,path,ours",
    [("src/*.py", "src/api/main.py", False), ("**/main.py", "main.py", True), ("[ab].py", "a.py", False)],
)
def test_where_fnmatch_means_something_else(pattern, path, ours):
    assert fnmatch(path, pattern) is not ours
    assert globs.matches_any(pattern, [path]) is ours


def test_engines_and_the_agent_team_use_it():
    assert semantics.glob_regex is globs.glob_regex
    agent = Component(
        "agent", "entry-agent", "p", "a.md", description="entry", meta={"contextPatterns": ["**/main.py", "src/*.py"]}
    )
    registry = AgentRegistry.build([Plugin(name="p", path="p", kind="claude", agents=(agent,))], normalize)
    top_level = registry.score(registry.agents[0], [], [], ["main.py"])
    assert top_level.matched == ("file:**/main.py",)
    nested = registry.score(registry.agents[0], [], [], ["src/deep/x.py"])
    assert nested.matched == ()
