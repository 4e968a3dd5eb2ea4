"""Every example in the language reference parses and is lint-clean against the shipped plugins,
and the plugin its "Your first plugin" walkthrough writes."""

from __future__ import annotations

import json
import re

from arbiter.dsl.parser import parse
from arbiter.dsl.program import lint

from arbiter.project.plugins import load_plugins


def with_walkthrough_plugin(text, shipped_plugins, tmp_path):
    """The shipped plugins and the one the walkthrough's manifest (its only JSON block) declares."""
    section = text[text.index("## Your first plugin") :]
    manifest = json.loads(re.findall(r"```json\n(.*?)```", section, re.S)[0])
    folder = tmp_path / "plugins" / manifest["name"] / ".claude-plugin"
    folder.mkdir(parents=True)
    (folder / "plugin.json").write_text(json.dumps(manifest))
    plugins, _ = load_plugins([tmp_path / "plugins"])
    return {**shipped_plugins, **{p.name: p for p in plugins}}


def test_reference_examples(repo, shipped_plugins, tmp_path):
    text = (repo / "dsl" / "REFERENCE.md").read_text()
    known = with_walkthrough_plugin(text, shipped_plugins, tmp_path)
    blocks = re.findall(r"```arb\n(.*?)```", text, re.S)
    assert len(blocks) >= 8
    for index, block in enumerate(blocks):
        module, problems = parse(block)
        assert problems == [], (index, problems)
        assert module.decls
    for index, block in enumerate(blocks):
        (tmp_path / "example.arb").write_text(block)
        errors = [d for d in lint([tmp_path / "example.arb"], known) if d.severity == "error"]
        assert errors == [], (index, [e.format() for e in errors])
