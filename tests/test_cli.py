"""The CLI as a user meets it: global options, JSON output, exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from arbiter import __version__
from arbiter.cli import main


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_version():
    code, out, _ = run("--version")
    assert code == 0 and out.strip() == f"arbiter, version {__version__}"


def test_help_teaches_the_commands():
    code, out, _ = run("--help")
    assert code == 0
    for word in ("plugins list", "check-config", "lint", "--plugins-dir", "--root"):
        assert word in out


def test_plugins_list_json_on_shipped_project(repo):
    code, out, _ = run("--root", str(repo), "plugins", "list", "--json")
    assert code == 0
    data = json.loads(out)
    assert len(data) == 7
    for item in data:
        assert {"name", "version", "description", "agents", "commands", "skills"} <= set(item)
    fastapi = next(p for p in data if p["name"] == "fastapi-backend")
    assert fastapi["agents"] == len(list((repo / "plugins/fastapi-backend/agents").glob("*.md")))


def test_plugins_list_over_the_corpus(corpus, tmp_path):
    code, out, err = run("--root", str(tmp_path), "--plugins-dir", str(corpus), "plugins", "list", "--json")
    assert code == 0
    data = {p["name"]: p for p in json.loads(out)}
    assert len(data) == 34
    assert data["fastapi-backend"]["skills"] == len(list((corpus / "fastapi-backend/skills").glob("*/SKILL.md")))
    assert "warning(s) while loading" in err


def test_plugins_show_and_did_you_mean(repo):
    code, out, _ = run("--root", str(repo), "plugins", "show", "fastapi-backend", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["capabilities"]["domains"] == ["backend", "api", "database"]
    assert any(c["name"] == "scaffold-endpoint" for c in data["commandList"])
    code, _, err = run("--root", str(repo), "plugins", "show", "fastapi-backnd")
    assert code == 2
    assert "Did you mean 'fastapi-backend'?" in err


def test_agents_list_filters_by_plugin(repo):
    code, out, _ = run("--root", str(repo), "agents", "list", "--plugin", "home-assistant", "--json")
    assert code == 0
    agents = json.loads(out)
    assert agents and {a["plugin"] for a in agents} == {"home-assistant"}
    assert all(a["id"].startswith("home-assistant::") for a in agents)


def test_check_config_ok_and_failing(repo, tmp_path):
    code, out, _ = run("--root", str(repo), "check-config")
    assert code == 0 and "configuration ok" in out
    project = tmp_path / "p"
    shutil.copytree(repo / "plugins", project / "plugins")
    (project / "configs").mkdir()
    (project / "configs" / "broker.yaml").write_text("heartbeat:\n  liveness: 0\n")
    code, out, _ = run("--root", str(project), "check-config", "--json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False
    (diag,) = [d for d in report["diagnostics"] if d["severity"] == "error"]
    assert diag["line"] == 2 and "heartbeat.liveness: min value is 1" in diag["message"]


def test_missing_rules_and_configs_use_defaults(repo, tmp_path):
    shutil.copytree(repo / "plugins", tmp_path / "plugins")
    code, out, _ = run("--root", str(tmp_path), "check-config")
    assert code == 0
    assert "0 rules" in out
    (tmp_path / "rules").mkdir()
    (tmp_path / "configs").mkdir()
    code, out, _ = run("--root", str(tmp_path), "check-config")
    assert code == 0


def test_invalid_manifest_fails_check_config_and_keeps_others(repo, tmp_path: Path):
    shutil.copytree(repo / "plugins", tmp_path / "plugins")
    manifest = tmp_path / "plugins/home-assistant/.claude-plugin/plugin.json"
    data = json.loads(manifest.read_text())
    data["routing"]["priority"] = -5
    manifest.write_text(json.dumps(data, indent=2))
    code, out, _ = run("--root", str(tmp_path), "check-config")
    assert code == 1
    assert "routing.priority: min value is 0" in out
    code, out, _ = run("--root", str(tmp_path), "plugins", "list", "--json")
    assert len(json.loads(out)) == 6
