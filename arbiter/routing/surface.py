"""Evidence in the words of the request: routing matches stemmed terms ("deploy" for
"deploying", "builds" for a plugin's "build"), but a user reads the words they wrote. Each term
is mapped back to the request's word that produced it, at its position in the request."""

from __future__ import annotations

import re
from typing import Callable, Mapping, Sequence

from arbiter.routing.text_index import STOPWORDS, stem, words

_TOKEN = re.compile(r"[a-z0-9][a-z0-9+#]*(?:[.\-_][a-z0-9+#]+)*")
_JOINER = re.compile(r"[.\-_]")
MAX_EDITS = 2  # a near spelling ("jria" for "jira") maps to the request word this close


def _written_tokens(text: str) -> list[str]:
    """The request's tokens as written (case kept), in the order :func:`words` finds them."""
    lowered = text.lower()
    same = len(lowered) == len(text)
    out: list[str] = []
    for match in _TOKEN.finditer(lowered):
        token = text[match.start() : match.end()] if same else match.group()
        out.append(token)
        if _JOINER.search(token):
            out.extend(p for p in _JOINER.split(token) if p)
    return out


def _edits(a: str, b: str) -> int:
    """Levenshtein distance, for the short words of a request."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def written_words(text: str, files: Sequence[str] = ()) -> Callable[[str], str]:
    """A function giving, for an evidence word, the request's word at its place: by stem first,
    then by the closest spelling; evidence not from the text (``file:...``, ``/regex/``) and
    words with no counterpart are kept as they are."""
    by_stem: dict[str, str] = {}
    for token, low in zip(_written_tokens(text), words(text)):
        if low not in STOPWORDS:
            by_stem.setdefault(stem(low), token)
            by_stem.setdefault(low, token)
    for low in (w for f in files for w in words(f)):
        by_stem.setdefault(stem(low), low)

    def one(word: str) -> str:
        if word in by_stem:
            return by_stem[word]
        key = stem(word)
        if key in by_stem:
            return by_stem[key]
        close = [(_edits(key, s), w) for s, w in by_stem.items() if abs(len(s) - len(key)) <= MAX_EDITS]
        best = min(close, default=(MAX_EDITS + 1, word))
        return best[1] if best[0] <= MAX_EDITS and len(key) >= 4 else word

    def written(evidence: str) -> str:
        if evidence.startswith(("file:", "/", ".")) or not evidence.strip():
            return evidence
        return " ".join(one(w) for w in evidence.lower().split())

    return written


def rewrite(items: Sequence[str], written: Callable[[str], str]) -> list[str]:
    """Evidence words as written, each once, in their order."""
    return list(dict.fromkeys(written(e) for e in items))


def rewrite_map(items: Mapping[str, Sequence[str]], written: Callable[[str], str]) -> dict[str, list[str]]:
    return {k: rewrite(v, written) for k, v in items.items()}
