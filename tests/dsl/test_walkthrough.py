"""The reference's "Your first plugin" is followed as written: its files, taken from the page's own
code blocks, make a project in which every check it names passes and the request it names is
routed to the new plugin."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from arbiter.cli import main

TEXT = "plan the raised beds of my vegetable garden for spring"


def walkthrough(repo: Path) -> str:
    text = (repo / "dsl" / "REFERENCE.md").read_text()
    start = text.index("## Your first plugin")
    return text[start : text.index("\n## ", start + 1)]


def blocks(section: str, kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", section, re.S)


@pytest.fixture
def project(repo: Path, tmp_path: Path) -> Path:
    """The shipped project, plus what the walkthrough says to write, where it says to write it."""
    root = tmp_path / "project"
    for folder in ("plugins", "rules", "configs"):
        shutil.copytree(repo / folder, root / folder)
    section = walkthrough(repo)
    manifest = json.loads(blocks(section, "json")[0])
    plugin = root / "plugins" / manifest["name"]
    (plugin / ".claude-plugin").mkdir(parents=True)
    (plugin / ".claude-plugin" / "plugin.json").write_text(json.dumps(manifest))
    agent, command = blocks(section, "markdown")
    for kind, body in (("agents", agent), ("commands", command)):
        name = re.search(r"^name: (\S+)$", body, re.M).group(1)  # type: ignore[union-attr]
        (plugin / kind).mkdir()
        (plugin / kind / f"{name}.md").write_text(body)
    (root / "rules" / "garden.arb").write_text(blocks(section, "arb")[0])
    (root / "rules" / "garden.test.yaml").write_text(blocks(section, "yaml")[0])
    return root


def run(root: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--root", str(root), *args])
    return result.exit_code, result.output


def test_every_check_the_walkthrough_names_passes(project: Path) -> None:
    assert run(project, "check-config")[0] == 0
    assert run(project, "lint")[0] == 0
    code, shown = run(project, "plugins", "show", "garden-planner")
    assert code == 0 and "plan-beds" in shown and "bed-planner" in shown
    code, shown = run(project, "test")
    assert code == 0, shown


def test_the_request_it_names_goes_to_the_new_plugin_for_the_rule_it_wrote(project: Path) -> None:
    code, shown = run(project, "explain", TEXT, "--json", "--no-record")
    assert code == 0, shown
    data = json.loads(shown)
    assert data["routingDecision"]["primaryPlugin"] == "garden-planner"
    assert "gardens-go-to-the-planner" in shown
