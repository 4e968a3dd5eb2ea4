"""Parsing: positions on every node, errors located and in words, all errors of a file at once."""

from __future__ import annotations

from arbiter.dsl import ast
from arbiter.dsl.parser import parse

SOURCE = """# header
domain backend {
  keywords "api", "server"
  files "**/*.py"
}

rule r1 {
  priority 5
  when domain backend and not (urgency >= 8 or complexity in ["complex"])
  then prefer fastapi-backend by 20
       collaborate lobbi-platform-manager on authentication after backend, api parallel
  because "why"
}
"""


def test_positions_on_every_node():
    module, problems = parse(SOURCE, "f.arb")
    assert problems == []
    domain, rule = module.decls
    assert domain.pos == ast.Pos(2, 1)
    assert domain.item_lines == {"keywords": 3, "files": 4}
    assert rule.pos == ast.Pos(7, 1)
    assert rule.clause_pos["when"] == ast.Pos(9, 3)
    assert rule.when.op == "and" and rule.when.pos == ast.Pos(9, 8)
    negated = rule.when.children[1]
    assert negated.op == "not" and negated.children[0].op == "or"
    assert negated.children[0].children[1].args[1][0].value == "complex"
    prefer, collab = rule.then
    assert (prefer.op, prefer.target, prefer.weight, prefer.pos) == ("prefer", "fastapi-backend", 20.0, ast.Pos(10, 15))
    assert collab.after == ("backend", "api") and collab.parallel and collab.on == "authentication"
    assert module.comments[0].text == "# header"


def test_error_is_located_in_words_with_did_you_mean():
    _, problems = parse("rule a {\n  whn domain x\n}\n")
    (p,) = problems
    assert (p.line, p.col) == (2, 3)
    assert "unexpected 'whn'" in p.message and "'when'" in p.message
    assert p.hint == "did you mean 'when'?"


def test_all_errors_of_a_file_in_one_run():
    text = "rule a { when }\nrule b { then prefer x }\nrule c { when domain x then prefer }\ndomain d { keywords 1 }\n"
    module, problems = parse(text)
    assert [p.line for p in problems] == [1, 3, 4]
    assert [d.name for d in module.decls] == ["b"]


def test_unclosed_block_and_bad_character():
    _, problems = parse("rule a {\n  when domain x\n")
    assert problems and "end of" in problems[0].message
    _, problems = parse("rule a { when domain x & y }")
    assert problems[0].message.startswith("unexpected character '&'")


def test_chain_constructs():
    text = """chain c saga (t: string, n: int = 3) timeout 2m {
  step a: p1 cmd-a with x = $t, y = 2 timeout 500ms retry 3 compensate undo-a with id = a.id
  if a.ok == true {
    step b: p1 jira:prepare when $n > 1
  } else {
    step c: p2 cmd-c
  }
}
"""
    module, problems = parse(text)
    assert problems == []
    (chain,) = module.decls
    assert chain.kind == "saga" and chain.timeout_ms == 120_000
    assert chain.params[1] == ast.Param("n", "int", ast.Value("number", 3, ast.Pos(1, 35)), ast.Pos(1, 26))
    step = chain.items[0]
    assert (step.timeout_ms, step.retry, step.compensate) == (500, 3, "undo-a")
    assert step.args[0][1].kind == "param" and step.compensate_args[0][1].kind == "ref"
    branch = chain.items[1]
    assert [s.name for s in branch.then] == ["b"] and [s.name for s in branch.otherwise] == ["c"]
    assert branch.then[0].command == "jira:prepare"
    assert [s.name for s in ast.steps(chain.items)] == ["a", "b", "c"]
