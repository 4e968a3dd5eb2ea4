"""The whole public corpus loads, odd files included, and nothing is lost."""

from __future__ import annotations

import json
from pathlib import Path

from arbiter.project.plugins import load_plugins


def _disk_counts(corpus: Path) -> dict[str, tuple[int, int, int]]:
    counts = {}
    for manifest in sorted(corpus.glob("*/.claude-plugin/plugin.json")):
        plugin_dir = manifest.parent.parent
        name = json.loads(manifest.read_text())["name"]
        counts[name] = (
            len(list(plugin_dir.glob("agents/*.md"))),
            len(list(plugin_dir.glob("commands/*.md"))),
            len(list(plugin_dir.glob("skills/*/SKILL.md"))),
        )
    return counts


def test_corpus_counts_match_files_on_disk(corpus):
    plugins, diags = load_plugins([corpus])
    expected = _disk_counts(corpus)
    assert len(expected) == 34
    got = {p.name: (len(p.agents), len(p.commands), len(p.skills)) for p in plugins}
    assert got == expected
    assert not [d for d in diags if d.severity == "error"]


def test_every_odd_file_gets_exactly_one_located_warning(corpus):
    _, diags = load_plugins([corpus])
    per_file: dict[str, int] = {}
    for d in diags:
        per_file[d.path] = per_file.get(d.path, 0) + 1
        assert d.severity == "warning"
        assert Path(d.path).exists()
        assert d.line >= 1
    assert max(per_file.values()) == 1
    messages = {d.path.split("claude-plugins/")[1]: d.message for d in diags}
    assert "not valid YAML" in messages["claude-code-expert/agents/memory-consolidator.md"]
    assert messages["claude-code-expert/agents/memory-consolidator.md"].endswith("read leniently")
    assert "no frontmatter" in messages["home-assistant-architect/skills/ha-core/SKILL.md"]
    assert "no 'name'" in messages["project-management-plugin/commands/pm-budget.md"]


def test_best_reading_of_odd_files(corpus):
    plugins, _ = load_plugins([corpus])
    by_name = {p.name: p for p in plugins}
    cce = {a.name: a for a in by_name["claude-code-expert"].agents}
    broken = cce["memory-consolidator"]
    assert broken.model == "opus"
    assert "engram" in broken.description
    pm = {c.name for c in by_name["project-management-plugin"].commands}
    assert "pm-budget" in pm  # name taken from the file name
    ha_skills = {s.name: s for s in by_name["home-assistant-architect"].skills}
    assert ha_skills["ha-core"].description  # from the first paragraph of the body
    # prefixed names are kept as written and still found without the prefix
    aws = by_name["aws-eks-helm-keycloak"]
    assert aws.command("debug") is not None


def test_same_names_in_several_plugins_are_kept_apart(corpus):
    plugins, _ = load_plugins([corpus])
    ids = [a.id for p in plugins for a in p.agents]
    names = [a.name for p in plugins for a in p.agents]
    assert len(set(ids)) == len(ids)
    assert len(set(names)) < len(names)  # e.g. api-architect lives in several plugins


def test_plain_plugins_keep_their_keywords(corpus):
    plugins, _ = load_plugins([corpus])
    fastapi = next(p for p in plugins if p.name == "fastapi-backend")
    assert fastapi.kind == "claude"
    assert "mongodb" in fastapi.keywords
    assert fastapi.capabilities.domains == ()
    assert fastapi.routing.accepts_routing_from is None
