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
    assert p.message == "unexpected 'whn'; expected because, priority, then, when or \"}\""
    assert p.hint == "did you mean 'when'?"


def test_all_errors_of_a_file_in_one_run():
    text = "rule a { when }\nrule b { then prefer x }\nrule c { when domain x then prefer }\ndomain d { keywords 1 }\n"
    module, problems = parse(text)
    assert [p.line for p in problems] == [1, 3, 4]
    assert [d.name for d in module.decls] == ["b"]


def test_unclosed_block_and_bad_character():
    _, problems = parse("rule a {\n  when domain x\n")
    assert problems and problems[0].message == "`{` opened at 1:8 is never closed"
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


def test_parameters_block_with_positions():
    text = (
        "# where texts state them\n"
        "parameters lobbi-platform-manager create-tenant {\n"
        '  tenantId from /\\btenant\\s+([a-z0-9-]+)/i, /for (\\S+)/ default "acme"\n'
        "  region default 3\n"
        "  step from /(x)/\n"
        "}\n"
    )
    module, problems = parse(text, "p.arb")
    assert problems == []
    (block,) = module.decls
    assert (block.plugin, block.command, block.pos) == ("lobbi-platform-manager", "create-tenant", ast.Pos(2, 1))
    assert (block.plugin_pos, block.command_pos) == (ast.Pos(2, 12), ast.Pos(2, 35))
    tenant, region, step = block.items
    assert tenant.regexes == ("/\\btenant\\s+([a-z0-9-]+)/i", "/for (\\S+)/")
    assert tenant.regex_pos == (ast.Pos(3, 17), ast.Pos(3, 45))
    assert tenant.default == ast.Value("str", "acme", ast.Pos(3, 65)) and tenant.pos == ast.Pos(3, 3)
    assert (region.regexes, region.default.value) == ((), 3)
    assert step.name == "step"  # a keyword is a name where a name is expected


def test_a_default_is_a_literal():
    _, problems = parse("parameters p c {\n  a default $x\n}\n")
    assert problems and problems[0].line == 2
    _, problems = parse("parameters p c {\n  a from /(x)/\n}\n")
    assert problems == []


def test_keywords_name_parameters_after_a_default():
    text = "parameters p c {\n  a default 1\n  when from /(x)/\n  timeout default true\n  step from /(y)/\n}\n"
    module, problems = parse(text)
    assert problems == []
    assert [b.name for b in module.decls[0].items] == ["a", "when", "timeout", "step"]


def test_chain_failure_option_and_argument_positions():
    text = 'chain c parallel fail-fast (t: string) timeout 1m {\n  step a: p cmd with x = $t, y = "z" compensate undo with id = a.id\n}\n'
    module, problems = parse(text)
    assert problems == []
    (chain,) = module.decls
    assert (chain.kind, chain.on_failure, chain.timeout_ms) == ("parallel", "fail-fast", 60_000)
    (step,) = chain.items
    assert step.arg_pos == (ast.Pos(2, 22), ast.Pos(2, 30)) and step.compensate_arg_pos == (ast.Pos(2, 59),)
    assert [k for k, _ in step.args] == ["x", "y"] and step.compensate_args[0][0] == "id"
    assert parse("chain c wait-all {\n}\n")[0].decls[0].on_failure == "wait-all"
    assert parse("chain c parallel {\n}\n")[0].decls[0].on_failure is None
    _, problems = parse("chain c parallel fail-slow {\n}\n")
    assert problems and "fail-fast or wait-all" in problems[0].message
