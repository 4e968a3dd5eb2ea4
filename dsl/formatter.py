"""Canonical layout for .arb files, comments kept.

Every declaration is printed from its AST as a list of (source line, text) pairs; comments
are then put back next to the printed line that came from the nearest source line (on the same
line for trailing comments, above the next line for leading ones). Printing from the AST is what
makes the layout canonical, and anchoring comments to source lines is what makes
``fmt(fmt(x)) == fmt(x)``: the second run sees each comment next to the same anchor.
"""

from __future__ import annotations

import json
from typing import Any

from . import ast
from .durations import format_ms
from .layout import BRANCH_BODY, RULE_CLAUSES, STEP_CLAUSES, STEP_END, Source
from .parser import parse

INDENT = "  "
Line = tuple[int | None, str]


class FormatError(Exception):
    """The text does not parse; formatting it would lose content."""


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def value(v: ast.Value) -> str:
    if v.kind == "str":
        return quote(v.value)
    if v.kind == "number":
        return number(v.value)
    if v.kind == "bool":
        return "true" if v.value else "false"
    if v.kind == "none":
        return "none"
    if v.kind == "param":
        return "$" + v.value
    return str(v.value)


_PRECEDENCE = {"or": 1, "and": 2, "not": 3}


def cond(c: ast.Cond, parent: int = 0) -> str:
    if c.op in ("and", "or"):
        text = f" {c.op} ".join(cond(child, _PRECEDENCE[c.op]) for child in c.children)
        return f"({text})" if _PRECEDENCE[c.op] < parent or (parent == 3) else text
    if c.op == "not":
        return "not " + cond(c.children[0], 3)
    return atom(c)


def atom(c: ast.Cond) -> str:
    a = c.args
    simple = {"domain": "domain", "context": "context", "pattern": "pattern", "fact": "fact"}
    if c.op in simple:
        return f"{simple[c.op]} {a[0]}"
    templates = {
        "domain_score": lambda: f"domain {a[0]} score {a[1]} {number(a[2])}",
        "fact_cmp": lambda: f"fact {a[0]} {a[1]} {value(a[2])}",
        "text_matches": lambda: f"text matches {a[0]}",
        "text_contains": lambda: f"text contains {quote(a[0])}",
        "file_matches": lambda: f"file matches {quote(a[0])}",
        "plugin_is": lambda: f"plugin {a[0]} is {a[1]}",
        "circuit_is": lambda: f"circuit {a[0]} is {a[1]}",
        "caller_is": lambda: f"caller is {a[0]}",
        "compare": lambda: f"{a[0]} {a[1]} {value(a[2])}",
        "one_of": lambda: f"{a[0]} in [{', '.join(value(v) for v in a[1])}]",
        "contains": lambda: f"{a[0]} contains {value(a[1])}",
    }
    return templates[c.op]()


def action(a: ast.Action) -> str:
    if a.op in ("prefer", "avoid"):
        return f"{a.op} {a.target}" + (f" by {number(a.weight)}" if a.weight is not None else "")
    if a.op == "collaborate":
        text = f"collaborate {a.target}"
        if a.on:
            text += f" on {a.on}"
        if a.after:
            text += " after " + ", ".join(a.after)
        return text + (" parallel" if a.parallel else "")
    if a.op == "assert" and a.value is not None:
        return f"assert {a.target} = {value(a.value)}"
    return f"{a.op} {a.target}"


def strings(items: tuple[str, ...]) -> str:
    return ", ".join(quote(s) for s in items)


def _closer(src: Source | None, pos: ast.Pos, pad: str = "", skip: int = 0, text: str = "}") -> Line:
    """The line closing the block opened at ``pos``, anchored to where its ``}`` was written, so
    comments before it stay inside the block and one after it stays on its line."""
    return (src.closing_line(pos.line, pos.col, skip) if src else None, pad + text)


def _condition(
    src: Source | None, pos: ast.Pos | None, keyword: str, lead: str, c: ast.Cond, stops: frozenset[str] | None = None
) -> list[Line]:
    """``lead`` + the condition: as the author broke it over lines (tokens and parentheses kept,
    spacing made canonical, continuation lines indented by nesting), else on one line. ``stops``:
    the words that end it (by default a rule's next clause, or the ``{`` of an ``if``)."""
    stops = stops or (RULE_CLAUSES if keyword == "when" else BRANCH_BODY)
    written = src.condition(pos.line, pos.col, keyword, stops) if src and pos and pos.line else None
    if not written:
        return [(pos.line if pos else None, lead + cond(c))]
    pad = " " * len(lead)
    return [(w.line, (lead if i == 0 else pad + INDENT * w.depth) + w.text) for i, w in enumerate(written)]


def _domain(d: ast.Domain, src: Source | None) -> list[Line]:
    out: list[Line] = [(d.pos.line, f"domain {d.name} {{")]
    lines = d.item_lines
    if d.keywords:
        out.append((lines.get("keywords"), f"{INDENT}keywords {strings(d.keywords)}"))
    if d.synonyms:
        pairs = ", ".join(f"{quote(a)} -> {quote(b)}" for a, b in d.synonyms)
        out.append((lines.get("synonyms"), f"{INDENT}synonyms {pairs}"))
    if d.files:
        out.append((lines.get("files"), f"{INDENT}files {strings(d.files)}"))
    return out + [_closer(src, d.pos)]


def _pattern(p: ast.Pattern, src: Source | None) -> list[Line]:
    out: list[Line] = [(p.pos.line, f"pattern {p.name} {{")]
    if p.phrases:
        out.append((p.item_lines.get("phrases"), f"{INDENT}phrases {strings(p.phrases)}"))
    if p.regexes:
        out.append((p.item_lines.get("regexes"), f"{INDENT}regex {', '.join(p.regexes)}"))
    return out + [_closer(src, p.pos)]


def _rule(r: ast.Rule, src: Source | None) -> list[Line]:
    out: list[Line] = [(r.pos.line, f"rule {r.name} {{")]
    where = r.clause_pos
    if r.priority or "priority" in where:  # a written `priority 0` stays: the author meant it
        out.append((where["priority"].line if "priority" in where else None, f"{INDENT}priority {r.priority}"))
    if r.when is not None:
        out.extend(_condition(src, where.get("when"), "when", f"{INDENT}when ", r.when))
    for index, act in enumerate(r.then):
        lead = f"{INDENT}then " if index == 0 else INDENT + " " * 5
        out.append((act.pos.line or None, lead + action(act)))
    if r.because is not None:
        out.append((where["because"].line if "because" in where else None, f"{INDENT}because {quote(r.because)}"))
    return out + [_closer(src, r.pos)]


def _caps(c: ast.Capabilities, src: Source | None) -> list[Line]:
    out: list[Line] = [(c.pos.line, f"capabilities {c.plugin} {{")]
    for name, weight in c.weights:
        out.append((c.item_lines.get(name), f"{INDENT}{name} {number(weight)}"))
    return out + [_closer(src, c.pos)]


def _args(args: tuple[tuple[str, ast.Value], ...]) -> str:
    return ", ".join(f"{k} = {value(v)}" for k, v in args)


def _step_head(s: ast.Step) -> str:
    return f"step {s.name}: {s.plugin} {s.command}" + (" with " + _args(s.args) if s.args else "")


def _step_tail(s: ast.Step) -> str:
    text = ""
    if s.timeout_ms is not None:
        text += " timeout " + format_ms(s.timeout_ms)
    if s.retry is not None:
        text += f" retry {s.retry}"
    if s.compensate:
        text += f" compensate {s.compensate}" + (" with " + _args(s.compensate_args) if s.compensate_args else "")
    return text


def _step(s: ast.Step) -> str:
    return _step_head(s) + (" when " + cond(s.when) if s.when is not None else "") + _step_tail(s)


def _step_lines(s: ast.Step, pad: str, src: Source | None) -> list[Line]:
    """A step on one line, unless its ``when`` was written over several: then that condition
    keeps its lines, and what follows it goes after its last line."""
    where = src.keyword_after(s.pos.line, s.pos.col, "when", STEP_END) if src and s.when is not None else None
    if where is None:
        return [(s.pos.line, pad + _step(s))]
    lines = _condition(src, ast.Pos(*where), "when", f"{pad}{_step_head(s)} when ", s.when, STEP_CLAUSES)
    return lines[:-1] + [(lines[-1][0], lines[-1][1] + _step_tail(s))]


def _items(items: tuple[ast.ChainItem, ...], depth: int, src: Source | None) -> list[Line]:
    pad = INDENT * depth
    out: list[Line] = []
    for item in items:
        if isinstance(item, ast.Step):
            out.extend(_step_lines(item, pad, src))
            continue
        head = _condition(src, item.pos, "if", f"{pad}if ", item.cond)
        out.extend(head[:-1] + [(head[-1][0], head[-1][1] + " {")])
        out.extend(_items(item.then, depth + 1, src))
        if item.otherwise:
            out.append(_closer(src, item.pos, pad, text="} else {"))
            out.extend(_items(item.otherwise, depth + 1, src))
        out.append(_closer(src, item.pos, pad, skip=1 if item.otherwise else 0))
    return out


def _param(p: ast.Param) -> str:
    text = p.name + (f": {p.type}" if p.type else "")
    return text + (f" = {value(p.default)}" if p.default is not None else "")


def _chain(c: ast.Chain, src: Source | None) -> list[Line]:
    head = f"chain {c.name} {c.kind}" + (f" {c.on_failure}" if c.on_failure else "")
    if c.params:
        head += " (" + ", ".join(_param(p) for p in c.params) + ")"
    if c.timeout_ms is not None:
        head += " timeout " + format_ms(c.timeout_ms)
    return [(c.pos.line, head + " {")] + _items(c.items, 1, src) + [_closer(src, c.pos)]


def _binding(b: ast.ParameterBinding) -> str:
    text = f"{INDENT}{b.name}"
    if b.regexes:
        text += " from " + ", ".join(b.regexes)
    return text + (f" default {value(b.default)}" if b.default is not None else "")


def _bindings(d: ast.ParameterBindings, src: Source | None) -> list[Line]:
    out: list[Line] = [(d.pos.line, f"parameters {d.plugin} {d.command} {{")]
    out.extend((b.pos.line or None, _binding(b)) for b in d.items)
    return out + [_closer(src, d.pos)]


PRINTERS: dict[type, Any] = {
    ast.Domain: _domain,
    ast.Pattern: _pattern,
    ast.Rule: _rule,
    ast.Capabilities: _caps,
    ast.Chain: _chain,
    ast.ParameterBindings: _bindings,
}


def _place_comments(decls: list[list[Line]], comments: tuple[ast.Comment, ...], code_lines: set[int]) -> list[str]:
    """Interleave comments with printed lines, anchored by source line numbers."""
    anchors = [(line, d, i) for d, lines in enumerate(decls) for i, (line, _) in enumerate(lines) if line]
    trailing: dict[tuple[int, int], str] = {}
    leading: dict[tuple[int, int], list[ast.Comment]] = {}
    tail: list[str] = []
    for comment in comments:
        same = next(((d, i) for line, d, i in reversed(anchors) if line == comment.line), None)
        if same and comment.line in code_lines and comment.col > 1:
            trailing[same] = comment.text
            continue
        after = next(((d, i) for line, d, i in anchors if line is not None and line >= comment.line), None)
        if after is None:
            tail.append(comment.text)
        else:
            leading.setdefault(after, []).append(comment)
    out: list[str] = []
    for d, lines in enumerate(decls):
        if out:
            out.append("")
        for i, (anchor, text) in enumerate(lines):
            indent = text[: len(text) - len(text.lstrip())] if i else ""
            indent += INDENT if text.lstrip().startswith("}") else ""  # comments before `}` stay inside
            out.extend(_comment_block(leading.get((d, i), []), anchor, indent))
            out.append(text + ("  " + trailing[(d, i)] if (d, i) in trailing else ""))
    if tail:
        if out:
            out.append("")
        out.extend(tail)
    return out


def _comment_block(comments: list[ast.Comment], anchor: int | None, indent: str) -> list[str]:
    """Leading comments, keeping a single blank line wherever the source had one or more."""
    out: list[str] = []
    for index, comment in enumerate(comments):
        if index and comment.line - comments[index - 1].line > 1:
            out.append("")
        out.append(indent + comment.text)
    if comments and anchor and anchor - comments[-1].line > 1:
        out.append("")
    return out


def _code_lines(text: str, comments: tuple[ast.Comment, ...]) -> set[int]:
    lines = text.splitlines()
    return {c.line for c in comments if lines[c.line - 1][: c.col - 1].strip()}


def _print(module: ast.Module, text: str, src: Source | None) -> str:
    decls = [PRINTERS[type(d)](d, src) for d in module.decls]
    lines = _place_comments(decls, module.comments, _code_lines(text, module.comments))
    return "\n".join(lines) + "\n" if lines else ""


def format_source(text: str, path: str = "<string>") -> str:
    """The canonical form of ``text``; raises :class:`FormatError` when it does not parse.

    Line endings stay as the file has them (CRLF when its first line ends so). The author's
    layout (conditions over several lines, where blocks close) is kept only when the result
    means the same program with the same comments; otherwise the plain canonical form is printed.
    """
    crlf = text.split("\n", 1)[0].endswith("\r")
    text = text.replace("\r\n", "\n")
    module, problems = parse(text, path)
    if problems:
        first = problems[0]
        raise FormatError(f"{path}:{first.line}:{first.col}: {first.message}")
    out = _print(module, text, Source(text))
    again = parse(out, path)[0]
    if to_json(again) != to_json(module) or [c.text for c in again.comments] != [c.text for c in module.comments]:
        out = _print(module, text, None)
    return out.replace("\n", "\r\n") if crlf else out


POSITION_FIELDS = (
    "pos",
    "clause_pos",
    "item_lines",
    "arg_pos",
    "compensate_arg_pos",
    "regex_pos",
    "plugin_pos",
    "command_pos",
)


def to_json(module: ast.Module) -> str:
    """A position-free rendering of a module, for comparing ASTs in tests."""

    def strip(node: Any) -> Any:
        if isinstance(node, ast.Pos):
            return None
        if isinstance(node, (tuple, list)):
            return [strip(n) for n in node]
        if hasattr(node, "__dataclass_fields__"):
            return {f: strip(getattr(node, f)) for f in node.__dataclass_fields__ if f not in POSITION_FIELDS}
        return node

    return json.dumps(strip(module.decls), sort_keys=True)
