"""Walking conditions and chains: the atoms of a condition, the branches of a chain, the values a
step reads. Lint's checks share these; they hold no judgement of their own."""

from __future__ import annotations

from typing import Iterator

from . import ast


def branches(items: tuple[ast.ChainItem, ...]) -> Iterator[ast.Branch]:
    for item in items:
        if isinstance(item, ast.Branch):
            yield item
            yield from branches(item.then)
            yield from branches(item.otherwise)


def cond_values(atom: ast.Cond) -> Iterator[ast.Value]:
    for arg in atom.args:
        if isinstance(arg, ast.Value):
            yield arg
    if atom.op in ("compare", "one_of", "contains"):
        subject = atom.args[0]
        if subject.startswith("$"):
            yield ast.Value("param", subject[1:], atom.pos)
        elif "." in subject:
            yield ast.Value("ref", subject, atom.pos)


def step_values(step: ast.Step) -> Iterator[ast.Value]:
    for _, value in step.args:
        yield value
    if step.when is not None:
        for atom in atoms(step.when):
            yield from cond_values(atom)


def atoms(cond: ast.Cond | None) -> list[ast.Cond]:
    if cond is None:
        return []
    if cond.op in ("and", "or", "not"):
        return [a for c in cond.children for a in atoms(c)]
    return [cond]
