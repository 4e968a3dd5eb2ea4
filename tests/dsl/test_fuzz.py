"""No input makes lint crash: hundreds of mutated rule files, each gets located diagnostics."""

from __future__ import annotations

import random

from arbiter.dsl.program import lint

JUNK = ["{", "}", "(", ")", '"', "/", "#", "when", "then", "->", "==", "and", "@", "\x00", "é", "9" * 30, "\n"]
MISSPELT = {"when": "wehn", "then": "thne", "rule": "rul", "prefer": "prefr", "domain": "domian", "step": "stpe"}


def mutate(text: str, rng: random.Random) -> str:
    kind = rng.randrange(6)
    if not text:
        return rng.choice(JUNK)
    i = rng.randrange(len(text))
    if kind == 0:  # delete a character span
        return text[:i] + text[i + rng.randint(1, 5) :]
    if kind == 1:  # swap two characters
        j = rng.randrange(len(text))
        chars = list(text)
        chars[i], chars[j] = chars[j], chars[i]
        return "".join(chars)
    if kind == 2:  # insert a junk token
        return text[:i] + " " + rng.choice(JUNK) + " " + text[i:]
    if kind == 3:  # truncate
        return text[:i]
    if kind == 4:  # misspell a keyword
        word = rng.choice(list(MISSPELT))
        return text.replace(word, MISSPELT[word], 1)
    return text[:i] + text[i:].replace("\n", " ", 3)


def test_hundreds_of_mutated_files_get_located_diagnostics(repo, shipped_plugins, tmp_path):
    rng = random.Random(7)
    sources = [p.read_text() for p in sorted((repo / "rules").glob("*.arb"))]
    path = tmp_path / "m.arb"
    located = 0
    for n in range(320):
        text = rng.choice(sources)
        for _ in range(rng.randint(1, 4)):
            text = mutate(text, rng)
        path.write_text(text, encoding="utf-8")
        diags = lint([path], shipped_plugins)
        lines = text.splitlines() or [""]
        for d in diags:
            assert d.path == str(path)
            assert 1 <= d.line <= len(lines) + 1, (n, d)
            assert d.col >= 1
            assert d.message
        if diags:
            located += 1
    assert located > 250  # nearly every mutation is noticed
