"""A command's declared parameters: a typed view of its frontmatter, read leniently, odd entries warned."""

from __future__ import annotations

from pathlib import Path

import pytest

from arbiter.project.model import Component, Parameter, freeze
from arbiter.project.parameters import read_parameters
from arbiter.project.plugins import load_plugins


def _command(root: Path, name: str, frontmatter: str) -> Path:
    commands = root / "demo" / "commands"
    commands.mkdir(parents=True, exist_ok=True)
    path = commands / f"{name}.md"
    path.write_text(f"---\nname: {name}\ndescription: a command\n{frontmatter}---\nbody\n")
    return path


def _load(root: Path) -> tuple[dict[str, Component], dict[str, str]]:
    plugins, diags = load_plugins([root / "demo"])
    notes = {Path(d.path).stem: d for d in diags if d.code == "W010"}
    return {c.name: c for c in plugins[0].commands}, notes


def test_shipped_commands_have_typed_parameters(repo):
    plugins, _ = load_plugins([repo / "plugins"])
    by_name = {p.name: p for p in plugins}
    create = by_name["lobbi-platform-manager"].command("create-tenant")
    assert create.parameters == (Parameter("tenantId", "string", True, "tenant id, e.g. acme-corp"),)
    model = by_name["fastapi-backend"].command("create-model")
    assert [(p.name, p.type, p.required) for p in model.parameters] == [
        ("name", "string", True),
        ("fields", "array", True),
    ]
    assert by_name["lobbi-platform-manager"].command("platform-status").parameters == ()
    assert by_name["jira-orchestrator"].command("prepare").parameters[0].name == "issueKey"


def test_list_of_mappings_with_types_defaults_and_aliases(tmp_path):
    _command(
        tmp_path,
        "scale",
        "parameters:\n"
        "  - {name: replicas, type: int, required: true, default: 2, description: how many}\n"
        "  - {name: ratio, type: number, default: 0.5}\n"
        "  - {name: dryRun, type: bool, required: 'yes'}\n"
        "  - {name: labels, type: object}\n"
        "  - {name: zones, type: list, default: [a, b]}\n"
        "  - plain\n",
    )
    commands, notes = _load(tmp_path)
    assert notes == {}
    assert commands["scale"].parameters == (
        Parameter("replicas", "integer", True, "how many", 2),
        Parameter("ratio", "number", False, "", 0.5),
        Parameter("dryRun", "boolean", True),
        Parameter("labels", "object"),
        Parameter("zones", "array", default=("a", "b")),
        Parameter("plain"),
    )


def test_a_mapping_of_name_to_spec(tmp_path):
    _command(tmp_path, "greet", "parameters:\n  who: {type: string, required: true}\n  times: integer\n  loud:\n")
    commands, notes = _load(tmp_path)
    assert notes == {}
    assert commands["greet"].parameters == (
        Parameter("who", "string", True),
        Parameter("times", "integer"),
        Parameter("loud"),
    )


def test_odd_entries_give_one_located_warning_and_the_rest_is_kept(tmp_path):
    _command(
        tmp_path,
        "odd",
        "tags: [x]\n"
        "parameters:\n"
        "  - {name: a, type: uuid}\n"
        "  - {type: string}\n"
        "  - 42\n"
        "  - {name: a}\n"
        "  - {name: b, required: maybe, type: integer, default: two}\n",
    )
    commands, notes = _load(tmp_path)
    assert commands["odd"].parameters == (Parameter("a", "string"), Parameter("b", "integer", False, "", "two"))
    warning = notes["odd"]
    assert warning.line == 5  # the `parameters:` line
    assert warning.message == (
        "parameter 2 has no name; ignored; parameter 3 has no name; ignored; "
        "parameter 'a' has the unknown type 'uuid'; read as a string; "
        "parameter 'a' is declared twice; the first is kept; "
        "the default of parameter 'b' is not of its type integer; kept as written; "
        "'required' of parameter 'b' is neither true nor false; read as false"
    )


@pytest.mark.parametrize(
    "raw,note",
    [
        ("tenantId, region", "'parameters' is a string, not a list of {name, type, required}; ignored"),
        (3, "'parameters' is a number, not a list of {name, type, required}; ignored"),
        ({"a": [1]}, "parameter 'a' is a list, not a mapping; ignored"),
        ([None, {"name": ""}], "parameter 1 has no name; ignored"),
    ],
)
def test_never_an_exception(raw, note):
    params, notes = read_parameters(freeze(raw))
    assert params == () and notes[0] == note


def test_nothing_declared_is_no_parameters(tmp_path):
    _command(tmp_path, "bare", "")
    _command(tmp_path, "empty", "parameters: []\n")
    commands, notes = _load(tmp_path)
    assert commands["bare"].parameters == () and commands["empty"].parameters == () and notes == {}
    assert Component("command", "x", "p", "x.md").parameters == ()


def test_the_view_follows_meta_when_a_component_is_built_directly():
    meta = freeze({"parameters": [{"name": "k", "type": "string", "required": True}]})
    assert Component("command", "x", "p", "x.md", meta=meta).parameters == (Parameter("k", "string", True),)
