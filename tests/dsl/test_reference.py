"""Every example in the language reference parses and is lint-clean against the shipped plugins."""

from __future__ import annotations

import re

from arbiter.dsl.parser import parse
from arbiter.dsl.program import lint


def test_reference_examples(repo, shipped_plugins, tmp_path):
    text = (repo / "dsl" / "REFERENCE.md").read_text()
    blocks = re.findall(r"```arb\n(.*?)```", text, re.S)
    assert len(blocks) >= 8
    for index, block in enumerate(blocks):
        module, problems = parse(block)
        assert problems == [], (index, problems)
        assert module.decls
    for index, block in enumerate(blocks):
        (tmp_path / "example.arb").write_text(block)
        errors = [d for d in lint([tmp_path], shipped_plugins) if d.severity == "error"]
        assert errors == [], (index, [e.format() for e in errors])
