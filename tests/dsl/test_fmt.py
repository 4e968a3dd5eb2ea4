"""fmt: canonical, idempotent, comment-preserving, and the AST survives it."""

from __future__ import annotations

import re

import pytest
from arbiter.dsl.formatter import FormatError, format_source, to_json
from arbiter.dsl.parser import parse
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbiter.cli import main


def comments(text: str) -> list[str]:
    return [c.text for c in parse(text)[0].comments]


def check(text: str) -> str:
    once = format_source(text)
    assert format_source(once) == once
    assert comments(once) == comments(text)
    assert to_json(parse(once)[0]) == to_json(parse(text)[0])
    return once


def test_shipped_files_are_canonical(repo):
    for path in sorted((repo / "rules").glob("*.arb")):
        text = path.read_text()
        assert check(text) == text, path


def test_messy_layout_becomes_canonical_with_comments_kept():
    messy = (
        "# lead\n\nrule   r{priority 3 when domain a and(domain b or domain c)   # why\n"
        'then prefer x by 2.0 avoid y\n# inside\n because "z"}\n# tail\n'
    )
    out = check(messy)
    assert out == (
        "# lead\n\nrule r {\n  priority 3\n  when domain a and (domain b or domain c)  # why\n"
        '  then prefer x by 2\n       avoid y\n  # inside\n  because "z"\n}\n\n# tail\n'
    )


def test_parameters_blocks_round_trip():
    messy = (
        "# where texts say it\nparameters  lobbi-platform-manager create-tenant{tenantId from /tenant\\s+(\\S+)/i,/for (x)/  # two\n"
        '# then a default\nregion default 2.50 flag default true\n   note from /(.+)/s default "a \\"b\\""}\n'
    )
    out = check(messy)
    assert out == (
        "# where texts say it\n"
        "parameters lobbi-platform-manager create-tenant {\n"
        "  tenantId from /tenant\\s+(\\S+)/i, /for (x)/  # two\n"
        "  # then a default\n"
        "  region default 2.5\n"
        "  flag default true\n"
        '  note from /(.+)/s default "a \\"b\\""\n'
        "}\n"
    )


def test_chain_failure_option_round_trips():
    out = check("chain c parallel   wait-all timeout 60s {step a: p c}\nchain d  fail-fast (x: string) {step a: p c}\n")
    assert out == (
        "chain c parallel wait-all timeout 1m {\n  step a: p c\n}\n\n"
        "chain d sequential fail-fast (x: string) {\n  step a: p c\n}\n"
    )


def test_unparsable_text_is_refused():
    with pytest.raises(FormatError, match="1:10"):
        format_source("rule r { whn x }")


def test_cli_check_and_write(tmp_path, repo):
    f = tmp_path / "a.arb"
    f.write_text("rule r{when domain api then prefer home-assistant}\n")
    broken = tmp_path / "b.arb"
    broken.write_text("rule r { when }\n")
    runner = CliRunner()
    result = runner.invoke(main, ["--root", str(repo), "fmt", "--check", str(f)])
    assert result.exit_code == 1 and "would reformat" in result.stdout
    assert f.read_text() == "rule r{when domain api then prefer home-assistant}\n"
    result = runner.invoke(main, ["--root", str(repo), "fmt", str(f), str(broken)])
    assert result.exit_code == 1  # the broken file is reported and left alone
    assert f.read_text() == "rule r {\n  when domain api\n  then prefer home-assistant\n}\n"
    assert broken.read_text() == "rule r { when }\n"
    assert runner.invoke(main, ["--root", str(repo), "fmt", "--check", str(f)]).exit_code == 0


NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True).filter(
    lambda s: s not in {"and", "or", "not", "in", "is", "by", "on", "after", "parallel", "contains", "matches", "score"}
)
STRINGS = st.text(alphabet=st.sampled_from('abc xyz-_."\\'), max_size=8)


def _atoms():
    return st.one_of(
        NAMES.map(lambda n: f"domain {n}"),
        NAMES.map(lambda n: f"context {n}"),
        st.tuples(NAMES, st.sampled_from(["==", "!=", ">=", "<"]), st.integers(-5, 50)).map(
            lambda t: f"{t[0]} {t[1]} {t[2]}"
        ),
        STRINGS.map(lambda s: "text contains " + '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'),
        NAMES.map(lambda n: f"plugin {n} is down"),
    )


CONDS = st.recursive(
    _atoms(),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        inner.map(lambda c: f"not {c}"),
    ),
    max_leaves=6,
)
ACTIONS = st.one_of(
    NAMES.map(lambda n: f"prefer {n}"),
    st.tuples(NAMES, st.integers(1, 99)).map(lambda t: f"avoid {t[0]} by {t[1]}"),
    NAMES.map(lambda n: f"collaborate {n} after x, y"),
    NAMES.map(lambda n: f"assert {n}"),
)


@st.composite
def rule_files(draw):
    rules = []
    for i in range(draw(st.integers(1, 4))):
        comment = draw(st.sampled_from(["", "# note\n", "  # trailing"]))
        acts = " ".join(draw(st.lists(ACTIONS, min_size=1, max_size=3)))
        body = f"rule r{i} {{ priority {draw(st.integers(0, 9))} when {draw(CONDS)} then {acts} }}"
        rules.append(comment + body if comment.startswith("#") else body + comment)
    return "\n".join(rules) + "\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_files())
def test_generated_files_format_idempotently(text):
    assert parse(text)[1] == [], text
    out = check(text)
    assert not re.search(r"\n\n\n", out)
