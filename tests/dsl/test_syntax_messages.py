"""Syntax errors say what the author got wrong, where they did it, in the words they type."""

from __future__ import annotations

from pathlib import Path

import pytest
from arbiter.dsl.diagnostics import Diagnostic
from arbiter.dsl.parser import parse
from arbiter.dsl.program import lint, load_rules
from click.testing import CliRunner

from arbiter.cli import main

GOOD = 'rule r {\n  when domain api\n  then prefer home-assistant\n  because "x"\n}\n'


def _formatted(tmp_path: Path, text: str) -> list[str]:
    (tmp_path / "t.arb").write_text(text, encoding="utf-8")
    diags = [d for d in lint([tmp_path], {}) if d.code == "E001"]
    return [d.format().replace(str(tmp_path) + "/", "") for d in diags]


def test_unclosed_brace_is_reported_where_it_was_opened(tmp_path):
    text = "rule a {\n  when domain api\n  then prefer home-assistant\n\nrule b {\n  then prefer x\n}\n"
    assert _formatted(tmp_path, text) == [
        "t.arb:1:8: error[E001]: `{` opened at 1:8 is never closed\n    rule a {\n           ^\n"
        "  hint: add the matching `}`"
    ]


def test_unclosed_parenthesis_is_reported_where_it_was_opened():
    _, problems = parse("rule a {\n  when (domain x and domain y\n  then prefer z\n}\n")
    assert [(p.line, p.col, p.message, p.hint) for p in problems] == [
        (2, 8, "`(` opened at 2:8 is never closed", "add the matching `)`")
    ]


@pytest.mark.parametrize(
    "text,col,hint",
    [
        ("rule a { when domain x then prefer y } }", 40, "remove it"),
        ("rule a { when domain x) then prefer y }", 23, "the innermost open bracket is `{`"),
    ],
)
def test_a_stray_closing_bracket_closes_nothing(text, col, hint):
    _, problems = parse(text)
    assert [(p.col, p.message, p.hint) for p in problems] == [(col, f"`{text[col - 1]}` closes nothing", hint)]


def test_unterminated_string_is_reported_at_its_opening_quote(tmp_path):
    assert _formatted(tmp_path, 'rule a {\n  when text contains "deploy\n  then prefer x\n}\n') == [
        't.arb:2:22: error[E001]: unterminated string\n      when text contains "deploy\n'
        "                         ^\n"
        '  hint: a string ends with `"` on the line it starts'
    ]


def test_unknown_regex_flag_is_named_at_the_flag(tmp_path):
    text = 'rule a {\n  when text matches /deploy/ix\n  then prefer x\n  because "y"\n}\n'
    assert _formatted(tmp_path, text) == [
        "t.arb:2:30: error[E001]: unknown regex flag 'x'; flags are i, m, s\n"
        "      when text matches /deploy/ix\n"
        "                                 ^"
    ]
    _, problems = parse("pattern p { regex /a/q }\nparameters p c { k from /(a)/z }\n")
    assert [(p.line, p.col, p.message) for p in problems] == [
        (1, 22, "unknown regex flag 'q'; flags are i, m, s"),
        (2, 30, "unknown regex flag 'z'; flags are i, m, s"),
    ]


@pytest.mark.parametrize(
    "text,message",
    [
        ("rule a { priorty 5 }", "unexpected 'priorty'; expected because, priority, then, when or \"}\""),
        (
            "rule a { when fact x then assert y = }",
            "unexpected '}'; expected a name, a number, a string, false, none, true or \"$\"",
        ),
        ("chain c { step a b c }", "unexpected 'b'; expected \":\""),
        ('domain d { synonyms "a" "b" }', 'unexpected \'"b"\'; expected "->"'),
        ("rule a { when domain x then prefer y }\nrule", "the declaration ends too soon; expected a name"),
        # only what fits here: no chain-step keywords, no `)` outside parentheses
        (
            "rule a { when urgency == 3 then }",
            "unexpected '}'; expected assert, avoid, collaborate, exclude, prefer, require, retract or strategy",
        ),
    ],
)
def test_expected_lists_only_what_fits_in_the_authors_words(text, message):
    _, problems = parse(text)
    assert [p.message for p in problems] == [message]
    assert "__ANON" not in message and "LBRACE" not in message and "RPAR" not in message


def test_a_keyword_taken_for_a_value_is_pointed_out():
    _, problems = parse("rule a { when urgency == then prefer p }")
    assert [(p.col, p.message, p.hint) for p in problems] == [
        (
            31,
            "unexpected 'prefer'; expected and, because, or, priority, then, when or \"}\"",
            "'then' was read as a name or value here: is something missing before it?",
        )
    ]


def test_a_byte_order_mark_is_accepted_by_the_parser_lint_loader_and_fmt(tmp_path, repo):
    (tmp_path / "bom.arb").write_text("\ufeff" + GOOD, encoding="utf-8")
    module, problems = parse("\ufeff" + GOOD)
    assert problems == [] and module.decls[0].pos.col == 1
    assert "E001" not in {d.code for d in lint([tmp_path], {})}
    assert load_rules([tmp_path], {}).ruleset.rules[0].name == "r"
    result = CliRunner().invoke(main, ["--root", str(repo), "fmt", str(tmp_path / "bom.arb")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "bom.arb").read_text(encoding="utf-8") == GOOD


def test_lint_shows_the_line_without_the_byte_order_mark(tmp_path):
    assert _formatted(tmp_path, "\ufeffrule a { when domain x) }\n") == [
        "t.arb:1:23: error[E001]: `)` closes nothing\n    rule a { when domain x) }\n"
        "                          ^\n  hint: the innermost open bracket is `{`"
    ]


def test_carets_keep_the_lines_tabs_for_every_diagnostic(tmp_path):
    text = 'rule r {\n\twhen domain api\n\tthen prefer\thome-assistnt\n\tbecause "x"\n}\n'
    (tmp_path / "t.arb").write_text(text)
    (unknown,) = [d for d in lint([tmp_path], {}) if d.code == "E101"]
    assert unknown.format().replace(str(tmp_path) + "/", "") == (
        "t.arb:3:14: error[E101]: unknown plugin 'home-assistnt'\n"
        "    \tthen prefer\thome-assistnt\n"
        "    \t           \t^"
    )
    syntax = Diagnostic("f.arb", 2, 3, "error", "E001", "m", "", "\t\twhn x")
    assert syntax.format() == "f.arb:2:3: error[E001]: m\n    \t\twhn x\n    \t\t^"
