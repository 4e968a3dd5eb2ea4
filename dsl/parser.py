"""Parsing .arb text into :mod:`.ast` nodes, with located, human-readable errors.

A file is split into top-level blocks (lines starting with a declaration keyword) and each
block is parsed on its own, so one broken rule does not hide the errors of the others: lint
reports every error of a file in one run.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedInput, VisitError

from . import ast
from .durations import parse_ms
from .syntax_errors import SyntaxProblem, from_lark, regex_flags, scan, strip_bom

__all__ = ["SyntaxProblem", "parse", "split_blocks", "unquote"]

GRAMMAR = Path(__file__).with_name("arbiter.lark")
TOP_KEYWORDS = ("domain", "pattern", "rule", "capabilities", "chain", "parameters")
_BLOCK_START = re.compile(r"^(?:" + "|".join(TOP_KEYWORDS) + r")\b", re.M)


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(
        GRAMMAR.read_text(encoding="utf-8"),
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=True,
        cache=True,  # the grammar's tables, kept in the temp folder: a cold command skips building them
    )


def _pos(meta: Any) -> ast.Pos:
    return ast.Pos(getattr(meta, "line", 0) or 0, getattr(meta, "column", 0) or 0)


def _tok_pos(tok: Token) -> ast.Pos:
    return ast.Pos(tok.line or 0, tok.column or 0)


def unquote(tok: str) -> str:
    body = tok[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


@v_args(meta=True)
class _ToAst(Transformer):
    """Lark tree → AST. One method per grammar alternative; positions come from ``meta``."""

    # values ---------------------------------------------------------
    def string(self, meta, c):
        return ast.Value("str", unquote(c[0]), _pos(meta))

    def number(self, meta, c):
        text = str(c[0])
        return ast.Value("number", float(text) if "." in text else int(text), _pos(meta))

    def true(self, meta, c):
        return ast.Value("bool", True, _pos(meta))

    def false(self, meta, c):
        return ast.Value("bool", False, _pos(meta))

    def none(self, meta, c):
        return ast.Value("none", None, _pos(meta))

    def param_ref(self, meta, c):
        return ast.Value("param", str(c[0]), _pos(meta))

    def step_ref(self, meta, c):
        return ast.Value("ref", ".".join(str(t) for t in c), _pos(meta))

    def word(self, meta, c):
        return ast.Value("word", str(c[0]), _pos(meta))

    def path(self, meta, c):
        return ".".join(str(t) for t in c)

    def param_path(self, meta, c):
        return "$" + str(c[0])

    def string_list(self, meta, c):
        return tuple(unquote(t) for t in c)

    # vocabulary -----------------------------------------------------
    def keywords_item(self, meta, c):
        return ("keywords", c[0], meta.line)

    def synonym(self, meta, c):
        return (unquote(c[0]), unquote(c[1]))

    def synonyms_item(self, meta, c):
        return ("synonyms", tuple(c), meta.line)

    def files_item(self, meta, c):
        return ("files", c[0], meta.line)

    def phrases_item(self, meta, c):
        return ("phrases", c[0], meta.line)

    def regex_item(self, meta, c):
        return ("regexes", tuple(str(t) for t in c), meta.line)

    def domain_decl(self, meta, c):
        fields: dict[str, tuple] = {"keywords": (), "synonyms": (), "files": ()}
        lines: dict[str, int] = {}
        for key, values, line in c[1:]:
            fields[key] = fields[key] + tuple(values)
            lines.setdefault(key, line)
        return ast.Domain(str(c[0]), fields["keywords"], fields["synonyms"], fields["files"], _pos(meta), lines)

    def pattern_decl(self, meta, c):
        fields: dict[str, tuple] = {"phrases": (), "regexes": ()}
        lines: dict[str, int] = {}
        for key, values, line in c[1:]:
            fields[key] = fields[key] + tuple(values)
            lines.setdefault(key, line)
        return ast.Pattern(str(c[0]), fields["phrases"], fields["regexes"], _pos(meta), lines)

    # rules ----------------------------------------------------------
    def priority_item(self, meta, c):
        return ("priority", int(c[0]), _pos(meta))

    def when_item(self, meta, c):
        return ("when", c[0], _pos(meta))

    def then_item(self, meta, c):
        return ("then", tuple(c), _pos(meta))

    def because_item(self, meta, c):
        return ("because", unquote(c[0]), _pos(meta))

    def rule_decl(self, meta, c):
        values: dict[str, Any] = {"priority": 0, "when": None, "then": (), "because": None}
        where: dict[str, ast.Pos] = {}
        for key, value, pos in c[1:]:
            values[key] = values[key] + value if key == "then" else value
            where.setdefault(key, pos)
        return ast.Rule(str(c[0]), pos=_pos(meta), clause_pos=where, **values)

    def _cond(self, op, meta, args=(), children=()):
        return ast.Cond(op, tuple(args), tuple(children), _pos(meta))

    def _flat(self, op, meta, children):
        """``a and (b and c)`` is ``a and b and c``: one canonical tree for equal meanings."""
        flat = [g for child in children for g in (child.children if child.op == op else (child,))]
        return self._cond(op, meta, children=flat)

    def or_cond(self, meta, c):
        return self._flat("or", meta, c)

    def and_cond(self, meta, c):
        return self._flat("and", meta, c)

    def not_(self, meta, c):
        return self._cond("not", meta, children=c)

    def domain_is(self, meta, c):
        return self._cond("domain", meta, [str(c[0])])

    def domain_score(self, meta, c):
        return self._cond("domain_score", meta, [str(c[0]), str(c[1]), float(c[2])])

    def context_is(self, meta, c):
        return self._cond("context", meta, [str(c[0])])

    def pattern_is(self, meta, c):
        return self._cond("pattern", meta, [str(c[0])])

    def fact_is(self, meta, c):
        return self._cond("fact", meta, [str(c[0])])

    def fact_cmp(self, meta, c):
        return self._cond("fact_cmp", meta, [str(c[0]), str(c[1]), c[2]])

    def text_matches(self, meta, c):
        return self._cond("text_matches", meta, [str(c[0])])

    def text_contains(self, meta, c):
        return self._cond("text_contains", meta, [unquote(c[0])])

    def file_matches(self, meta, c):
        return self._cond("file_matches", meta, [unquote(c[0])])

    def plugin_is(self, meta, c):
        return self._cond("plugin_is", meta, [str(c[0]), str(c[1])])

    def circuit_is(self, meta, c):
        return self._cond("circuit_is", meta, [str(c[0]), str(c[1])])

    def caller_is(self, meta, c):
        return self._cond("caller_is", meta, [str(c[0])])

    def compare(self, meta, c):
        return self._cond("compare", meta, [c[0], str(c[1]), c[2]])

    def one_of(self, meta, c):
        return self._cond("one_of", meta, [c[0], tuple(c[1:])])

    def contains(self, meta, c):
        return self._cond("contains", meta, [c[0], c[1]])

    # actions --------------------------------------------------------
    def prefer(self, meta, c):
        return ast.Action("prefer", str(c[0]), weight=float(c[1]) if c[1] is not None else None, pos=_tok_pos(c[0]))

    def avoid(self, meta, c):
        return ast.Action("avoid", str(c[0]), weight=float(c[1]) if c[1] is not None else None, pos=_tok_pos(c[0]))

    def require(self, meta, c):
        return ast.Action("require", str(c[0]), pos=_tok_pos(c[0]))

    def exclude(self, meta, c):
        return ast.Action("exclude", str(c[0]), pos=_tok_pos(c[0]))

    def strategy(self, meta, c):
        return ast.Action("strategy", str(c[0]), pos=_tok_pos(c[0]))

    def assert_(self, meta, c):
        return ast.Action("assert", str(c[0]), value=c[1], pos=_tok_pos(c[0]))

    def retract(self, meta, c):
        return ast.Action("retract", str(c[0]), pos=_tok_pos(c[0]))

    def collab_on(self, meta, c):
        return ("on", str(c[0]))

    def collab_after(self, meta, c):
        return ("after", tuple(str(t) for t in c))

    def collab_parallel(self, meta, c):
        return ("parallel", True)

    def collaborate(self, meta, c):
        opts = dict(c[1:])
        return ast.Action(
            "collaborate",
            str(c[0]),
            on=opts.get("on"),
            after=opts.get("after", ()),
            parallel=opts.get("parallel", False),
            pos=_tok_pos(c[0]),
        )

    # capabilities ---------------------------------------------------
    def cap_weight(self, meta, c):
        return (str(c[0]), float(c[1]), meta.line)

    def caps_decl(self, meta, c):
        weights = tuple((name, weight) for name, weight, _ in c[1:])
        lines = {name: line for name, _, line in c[1:]}
        return ast.Capabilities(str(c[0]), weights, _pos(meta), lines)

    # chains ---------------------------------------------------------
    def param(self, meta, c):
        return ast.Param(str(c[0]), str(c[1]) if c[1] is not None else None, c[2], _pos(meta))

    def params(self, meta, c):
        return tuple(c)

    def chain_timeout(self, meta, c):
        return ("timeout", parse_ms(str(c[0])))

    def arg(self, meta, c):
        return (str(c[0]), c[1], _pos(meta))

    def step_with(self, meta, c):
        return ("args", tuple(c))

    def step_when(self, meta, c):
        return ("when", c[0])

    def step_timeout(self, meta, c):
        return ("timeout_ms", parse_ms(str(c[0])))

    def step_retry(self, meta, c):
        return ("retry", int(c[0]))

    def step_compensate(self, meta, c):
        return ("compensate", (str(c[0]), tuple(a for a in c[1:] if a is not None)))

    def step(self, meta, c):
        opts: dict[str, Any] = {}
        for key, value in c[3:]:
            opts[key] = opts.get(key, ()) + value if key == "args" else value
        name, comp_args = opts.pop("compensate", (None, ()))
        args = opts.pop("args", ())
        return ast.Step(
            str(c[0]),
            str(c[1]),
            str(c[2]),
            args=tuple((k, v) for k, v, _ in args),
            compensate=name,
            compensate_args=tuple((k, v) for k, v, _ in comp_args),
            pos=_pos(meta),
            arg_pos=tuple(where for _, _, where in args),
            compensate_arg_pos=tuple(where for _, _, where in comp_args),
            **opts,
        )

    def else_part(self, meta, c):
        return ("else", tuple(c))

    def branch(self, meta, c):
        otherwise: tuple = ()
        items = list(c[1:])
        if items and isinstance(items[-1], tuple) and items[-1][0] == "else":
            otherwise = items.pop()[1]
        return ast.Branch(c[0], tuple(items), otherwise, _pos(meta))

    def chain_decl(self, meta, c):
        name, kind, on_failure, params = str(c[0]), c[1], c[2], c[3]
        timeout = None
        items = []
        for part in c[4:]:
            if isinstance(part, tuple) and part and part[0] == "timeout":
                timeout = part[1]
            else:
                items.append(part)
        return ast.Chain(
            name,
            str(kind) if kind else "sequential",
            params or (),
            timeout,
            tuple(items),
            _pos(meta),
            on_failure=str(on_failure) if on_failure else None,
        )

    # command parameters ---------------------------------------------
    def binding_from(self, meta, c):
        regexes = [t for t in c[1:] if isinstance(t, Token)]
        default = c[-1] if isinstance(c[-1], ast.Value) else None
        return ast.ParameterBinding(
            str(c[0]), tuple(str(t) for t in regexes), default, _pos(meta), tuple(_tok_pos(t) for t in regexes)
        )

    def binding_default(self, meta, c):
        return ast.ParameterBinding(str(c[0]), (), c[1], _pos(meta))

    def bindings_decl(self, meta, c):
        plugin, command = c[0], c[1]
        return ast.ParameterBindings(
            str(plugin), str(command), tuple(c[2:]), _pos(meta), _tok_pos(plugin), _tok_pos(command)
        )

    def start(self, meta, c):
        return tuple(c)


def split_blocks(text: str) -> list[tuple[int, str]]:
    """Top-level blocks with their 0-based starting line (comments go with the next block)."""
    starts = [m.start() for m in _BLOCK_START.finditer(text)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    blocks = []
    for i, begin in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(text)
        blocks.append((text.count("\n", 0, begin), text[begin:end]))
    return blocks


def _shift(node: Any, offset: int) -> Any:
    """Move every position of a block's nodes down by ``offset`` lines."""
    if offset == 0:
        return node
    if isinstance(node, ast.Pos):
        return ast.Pos(node.line + offset, node.col) if node.line else node
    if isinstance(node, tuple):
        return tuple(_shift(n, offset) for n in node)
    if isinstance(node, dict):
        return {k: _shift(v, offset) for k, v in node.items()}
    if hasattr(node, "__dataclass_fields__"):
        changes = {f: _shift(getattr(node, f), offset) for f in node.__dataclass_fields__}
        if "item_lines" in changes:
            changes["item_lines"] = {k: v + offset for k, v in node.item_lines.items()}
        return type(node)(**changes)
    return node


def _comments(text: str) -> tuple[ast.Comment, ...]:
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = re.sub(r'"(\\.|[^"\\\n])*"|/(\\.|[^/\\\n])+/[A-Za-z]*', lambda m: " " * len(m.group()), line)
        index = stripped.find("#")
        if index >= 0:
            out.append(ast.Comment(line[index:].rstrip(), number, index + 1))
    return tuple(out)


def parse(text: str, path: str = "<string>") -> tuple[ast.Module, list[SyntaxProblem]]:
    """Parse a whole file. Never raises on bad input: problems are returned with positions."""
    text = strip_bom(text)
    decls: list[ast.Decl] = []
    problems: list[SyntaxProblem] = []
    for offset, block in split_blocks(text):
        if not block.strip() or not re.sub(r"#[^\n]*", "", block).strip():
            continue
        try:
            tree = _parser().parse(block)
        except UnexpectedInput as exc:
            problems.append(scan(block, offset) or from_lark(exc, offset, _parser(), block))
            continue
        problems.extend(regex_flags(tree.scan_values(lambda v: isinstance(v, Token) and v.type == "REGEX"), offset))
        try:
            parsed = _ToAst().transform(tree)
        except VisitError as exc:
            problems.append(SyntaxProblem(offset + 1, 1, f"cannot read this block: {exc.orig_exc}"))
            continue
        for decl in parsed:
            decls.append(_shift(decl, offset))
    return ast.Module(path, tuple(decls), _comments(text)), problems
