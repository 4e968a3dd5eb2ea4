"""fmt keeps the author's structure: broken conditions, comments where they were, CRLF, priority 0."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from arbiter.dsl.formatter import format_source, to_json
from arbiter.dsl.parser import parse
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbiter.cli import main


def same_program(before: str, after: str) -> None:
    old, new = parse(before)[0], parse(after.replace("\r\n", "\n"))[0]
    assert to_json(new) == to_json(old)
    assert [c.text for c in new.comments] == [c.text for c in old.comments]


def check(text: str) -> str:
    once = format_source(text)
    assert format_source(once) == once
    same_program(text, once)
    return once


def test_a_condition_over_several_lines_stays_so_with_its_parentheses():
    text = (
        "rule r {\n  when (\n    domain a or domain b\n  ) and urgency>3\n"
        "     or not (circuit c is open\n  and x in [1,2, 3])\n  then prefer x\n}\n"
    )
    assert check(text) == (
        "rule r {\n  when (\n         domain a or domain b\n       ) and urgency > 3\n"
        "       or not (circuit c is open\n         and x in [1, 2, 3])\n  then prefer x\n}\n"
    )


def test_a_branch_condition_over_several_lines_stays_so():
    text = "chain c sequential {\n  if x == 1\n  and y==2 {\n    step b: p c\n  }\n}\n"
    assert check(text) == "chain c sequential {\n  if x == 1\n     and y == 2 {\n    step b: p c\n  }\n}\n"


def test_a_step_condition_over_several_lines_stays_so_and_its_options_follow_it():
    text = (
        "chain c(t) {\n  step a: p cmd with t = $t when (fact ready\n      or urgency>=7) and not fact skip"
        " retry 2 timeout 30s\n  step b: p cmd\n}\n"
    )
    lead = "  step a: p cmd with t = $t when "
    assert check(text) == (
        "chain c sequential (t) {\n"
        f"{lead}(fact ready\n{' ' * len(lead)}  or urgency >= 7) and not fact skip timeout 30s retry 2\n"
        "  step b: p cmd\n}\n"
    )
    one_line = "chain c sequential (t) {\n  step a: p cmd when fact ready or urgency >= 7 retry 2\n}\n"
    assert check(one_line) == one_line


def test_a_condition_on_one_line_is_printed_canonically():
    assert check("rule r { when domain a and(domain b or domain c) then prefer x }\n") == (
        "rule r {\n  when domain a and (domain b or domain c)\n  then prefer x\n}\n"
    )


def test_trailing_comments_stay_on_their_line():
    text = (
        "rule r {  # head\n  when domain a  # cond\n       and domain b  # second line\n"
        "  then prefer x  # one\n       avoid y  # two\n}  # closed\n"
    )
    assert check(text) == text


def test_comments_stay_inside_their_block():
    text = (
        "rule r {\n  when domain a\n  then prefer x\n  # last words of r\n}\n\n"
        "chain c sequential {\n  if x == 1 {\n    step b: p c\n    # end of then\n  } else {\n"
        "    step d: p c\n    # end of else\n  }\n  # end of chain\n}\n\n# after everything\n"
    )
    assert check(text) == text
    assert check("rule r { when domain a then prefer x\n# inside\n}\n") == (
        "rule r {\n  when domain a\n  then prefer x\n  # inside\n}\n"
    )


def test_priority_zero_stays_when_written():
    assert "priority 0" in check("rule r { priority 0 when domain a then prefer x }\n")
    assert "priority" not in check("rule r { when domain a then prefer x }\n")


def test_crlf_stays_crlf():
    text = "rule r {\r\n  when domain a  # c\r\n  then prefer x\r\n}\r\n"
    assert format_source(text) == text
    assert format_source("rule r { when domain a then prefer x }\r\n") == (
        "rule r {\r\n  when domain a\r\n  then prefer x\r\n}\r\n"
    )


def test_cli_keeps_crlf_on_disk(tmp_path):
    f = tmp_path / "rules" / "a.arb"
    f.parent.mkdir()
    f.write_bytes(b"rule r { when domain a then prefer x }\r\n")
    assert CliRunner().invoke(main, ["fmt", str(f)]).exit_code == 0
    assert f.read_bytes() == b"rule r {\r\n  when domain a\r\n  then prefer x\r\n}\r\n"


def test_diff_and_check_change_nothing_and_exit_1(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "ok.arb").write_text("rule o {\n  when domain a\n  then prefer x\n}\n")
    messy = rules / "messy.arb"
    messy.write_text("rule r { when domain a then prefer x }\n")
    (rules / "notes.md").write_text("not rules { \n")
    runner = CliRunner()
    diff = runner.invoke(main, ["fmt", "--diff", str(rules)])
    assert diff.exit_code == 1
    assert f"--- {messy}\n+++ {messy} (formatted)\n" in diff.stdout
    assert "-rule r { when domain a then prefer x }\n+rule r {\n+  when domain a\n" in diff.stdout
    assert "ok.arb" not in diff.stdout
    check_ = runner.invoke(main, ["fmt", "--check", str(rules)])
    assert check_.exit_code == 1 and check_.stdout == f"would reformat {messy}\n"
    assert messy.read_text() == "rule r { when domain a then prefer x }\n"
    assert runner.invoke(main, ["fmt", str(rules)]).exit_code == 0
    assert runner.invoke(main, ["fmt", "--check", "--diff", str(rules)]).exit_code == 0
    usage = runner.invoke(main, ["fmt", str(rules / "notes.md")])
    assert usage.exit_code == 2 and "not a rule file" in usage.stderr


def fixtures(repo: Path) -> list[str]:
    texts = [p.read_text() for p in sorted((repo / "rules").glob("*.arb"))]
    return texts + re.findall(r"```arb\n(.*?)```", (repo / "dsl" / "REFERENCE.md").read_text(), re.S)


def test_fixtures_and_shipped_rules_format_idempotently(repo):
    for text in fixtures(repo):
        check(text)


NAMES = st.sampled_from(["a", "b", "api", "x-y", "c2"])
ATOMS = st.one_of(
    NAMES.map(lambda n: f"domain {n}"),
    st.tuples(NAMES, st.sampled_from(["==", ">=", "<"]), st.integers(-3, 9)).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
    NAMES.map(lambda n: f"circuit {n} is open"),
    st.lists(st.integers(0, 5), min_size=1, max_size=3).map(lambda v: f"u in [{', '.join(map(str, v))}]"),
)
BREAK = st.sampled_from([" ", "\n    ", "  # note\n      ", "\n# own line\n  "])


@st.composite
def conditions(draw, depth: int = 0):
    if depth > 2 or draw(st.booleans()):
        atom = draw(ATOMS)
        return f"not {atom}" if draw(st.integers(0, 4)) == 0 else atom
    op = draw(st.sampled_from(["and", "or"]))
    left, right = draw(conditions(depth + 1)), draw(conditions(depth + 1))
    text = f"{left}{draw(BREAK)}{op} {right}"
    return f"({draw(BREAK)}{text}{draw(BREAK)})" if draw(st.booleans()) else f"({text})"


@st.composite
def programs(draw):
    out = []
    for i in range(draw(st.integers(1, 3))):
        priority = draw(st.sampled_from(["", "priority 0\n", "priority 7\n"]))
        inner = draw(st.sampled_from(["", "  # inside\n", "\n  # spaced\n"]))
        tail = draw(st.sampled_from(["", "  # closed"]))
        out.append(f"rule r{i} {{ {priority}when {draw(conditions())}\n then prefer p{i}{inner}}}{tail}\n")
    if draw(st.booleans()):
        cond = draw(conditions())
        out.append(f"chain c {{\n if {cond} {{ step a: p c\n # end\n }} else {{ step b: p c }}\n}}\n")
    text = "\n".join(out)
    return text.replace("\n", "\r\n") if draw(st.integers(0, 5)) == 0 else text


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_generated_programs_keep_meaning_and_format_idempotently(text):
    assert parse(text.replace("\r\n", "\n"))[1] == [], text
    once = check(text)
    assert once.endswith("\r\n") == text.endswith("\r\n")
    assert not re.search(r"(\r?\n){3}", once)


@pytest.mark.parametrize(
    "text,kept",
    [
        (
            "rule r { when domain a\n  and (domain b\n  or domain c) then prefer x }\n",
            "  when domain a\n       and (domain b\n         or domain c)\n  then prefer x\n",
        ),
        (
            "chain c sequential {\n  if domain a\n  and (domain b\n  or domain c) {\n    step a: p c\n  }\n}\n",
            "  if domain a\n     and (domain b\n       or domain c) {\n    step a: p c\n",
        ),
    ],
)
def test_continuation_lines_are_indented_by_nesting(text, kept):
    assert kept in check(text)


def test_fmt_finds_the_project_from_a_subfolder(tmp_path, monkeypatch):
    rules = tmp_path / "proj" / "rules"
    rules.mkdir(parents=True)
    (rules / "a.arb").write_text("rule r { when domain a then prefer x }\n")
    monkeypatch.chdir(rules)
    result = CliRunner().invoke(main, ["fmt", "--check"])
    assert result.exit_code == 1 and "a.arb" in result.stdout
