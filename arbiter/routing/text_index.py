"""The text index of a snapshot: what words point at which plugin, and how strongly.

Built once per snapshot, read by every request. It learns from everything a plugin says about
itself — manifest capabilities and keywords, description, and the name, description, keywords
and body of every agent, command and skill — with field weights (a plugin's own name and
keywords count more than a sentence deep in a skill's body).

Scoring is BM25-like at plugin level: a term's weight is its inverse plugin frequency (words in
every plugin, like "agent" or "create", count for almost nothing), times a saturating function
of how much the plugin talks about it. Word forms are folded by a light suffix stemmer; tokens
of six letters or more also match the plugins' words one edit away, as written ("deploymnet"
finds "deployment", whose term is "deploy"; precomputed deletion neighbourhoods keep that O(1)),
tokens of four or five letters a term with two adjacent letters swapped, or a word one letter
longer with that letter left out ("blazr", "cyle"); adjacent words form bigrams so "pull
request" or "home assistant" count as a phrase. File paths contribute their folder names, file
stems and extensions.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable, Mapping, Sequence

from arbiter.project.model import Component, Plugin

STOPWORDS = frozenset(
    """a an the and or but if then else of to in on at by for with from into onto over under about as is are was
    were be been being it its this that these those i me my we our you your he she they them their can could would
    should will shall may might must do does did done have has had not no yes so than too very just also only
    please help want need like make get set use using used via per all any some each every more most other such
    what which who whom how when where why up down out off again further once here there both few own same s t
    let lets i'm im we're you're it's don't dont can't cant new""".split()
)
_TOKEN = re.compile(r"[a-z0-9][a-z0-9+#]*(?:[.\-_][a-z0-9+#]+)*")
_JOINER = re.compile(r"[.\-_]")  # what joins the parts of a compound token
SUFFIXES = ("ations", "ation", "ments", "ment", "ings", "ing", "ers", "er", "ies", "es", "ed", "ly", "s")

# Field weights: how much one occurrence in a field says about the plugin.
W_NAME, W_KEYWORD, W_DESCRIPTION = 4.0, 3.0, 2.0
W_COMPONENT_NAME, W_COMPONENT_DESC, W_COMPONENT_KEYWORD, W_BODY = 2.0, 1.5, 1.0, 0.15
BODY_CHARS = 6000  # bodies beyond this add little but cost index size
K1 = 4.0  # saturation: a plugin's weight for a term approaches 1 as it mentions it more
B = 0.75  # length normalization: a plugin with ten times the text needs more mentions to count as much


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A light stemmer: enough to fold plural, -ing, -ed and -ation forms onto one key."""
    if len(word) <= 4 or not word.isalpha():
        return word
    for suffix in SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            base = word[: -len(suffix)]
            if suffix == "ies":
                return base + "y"
            return base
    return word


def words(text: str) -> list[str]:
    """Lower-cased word tokens with compound tokens also split into their parts."""
    out: list[str] = []
    for token in _TOKEN.findall(text.lower()):
        out.append(token)
        if _JOINER.search(token):
            out.extend(p for p in _JOINER.split(token) if p)
    return out


def terms(text: str) -> list[str]:
    """Stemmed content terms plus bigrams of adjacent content words."""
    toks = [stem(w) for w in words(text) if w not in STOPWORDS and len(w) > 1]
    return toks + [f"{a} {b}" for a, b in zip(toks, toks[1:])]


def path_terms(path: str) -> list[str]:
    """Folder names, the file stem and the extension of a path."""
    parts = [p for p in re.split(r"[\\/]", path.lower()) if p and p not in (".", "..")]
    out: list[str] = []
    for part in parts:
        stem_part, _, ext = part.rpartition(".") if "." in part else (part, "", "")
        out.extend(terms(stem_part or part))
        if ext:
            out.append(f".{ext}")
    return out


def deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


@dataclass(frozen=True)
class VocabularyIndex:
    """Per term: each plugin's saturated weight, and the term's inverse plugin frequency."""

    plugins: tuple[str, ...]
    postings: Mapping[str, tuple[tuple[int, float], ...]]
    idf: Mapping[str, float]
    typo_map: Mapping[str, tuple[str, ...]]  # a word or one of its deletions -> the plugins' words
    surface: Mapping[str, str]  # term -> a readable word it came from
    longest: int = 0  # length of the longest word that has near spellings in typo_map
    spelled: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # a plugins' word -> its terms
    rarest: float = 1.0  # the largest inverse plugin frequency: what a word no plugin uses counts as

    def lookup(self, term: str) -> list[str]:
        """The vocabulary terms a request term stands for: itself, or near spellings.

        Near spellings are found among the plugins' words as written, then folded to their
        terms: "deploymnet" is one edit from "deployment", whose term is "deploy". A token longer
        than any such word plus one cannot be a near spelling, and is not looked at further: its
        deletion neighbourhood costs the square of its length."""
        if term in self.postings:
            return [term]
        if " " in term or not term.isalpha() or len(term) < 4:
            return []
        if len(term) < 6:  # short words: two letters swapped ("jria") or one left out ("blazr", "cyle")
            swaps = {term[:i] + term[i + 1] + term[i] + term[i + 2 :] for i in range(len(term) - 1)}
            near = {t for t in swaps if t != term and t in self.postings}
            near.update(t for w in self.typo_map.get(term, ()) if len(w) == len(term) + 1 for t in self.spelled[w])
            return sorted(near)
        if len(term) > self.longest + 1:
            return []
        near: set[str] = set(self.typo_map.get(term, ()))
        for key in deletions(term):
            near.update(self.typo_map.get(key, ()))
        return sorted({t for w in near if abs(len(w) - len(term)) <= 1 for t in self.spelled[w]})


def _component_text(comp: Component) -> list[tuple[str, float]]:
    return [
        (comp.name.replace(":", " ").replace("-", " "), W_COMPONENT_NAME),
        (comp.description, W_COMPONENT_DESC),
        (" ".join(k for k in comp.keywords if k != comp.plugin), W_COMPONENT_KEYWORD),
        (comp.body[:BODY_CHARS], W_BODY),
    ]


def plugin_fields(plugin: Plugin, vocabulary: Mapping | None) -> list[tuple[str, float]]:
    caps = plugin.capabilities
    declared = " ".join(caps.domains + caps.contexts + caps.patterns + caps.integrations)
    fields = [
        (plugin.name.replace("-", " "), W_NAME),
        (" ".join(plugin.keywords + plugin.routing.keywords), W_KEYWORD),
        (declared.replace("-", " "), W_KEYWORD),
        (plugin.description, W_DESCRIPTION),
    ]
    for comp in plugin.components():
        fields.extend(_component_text(comp))
    return fields


def build_index(plugins: Sequence[Plugin], vocabulary: Mapping | None = None) -> VocabularyIndex:
    """Index every plugin's text. ``vocabulary`` (DSL domains/patterns) only adds surface words."""
    raw: list[dict[str, float]] = []
    surface: dict[str, str] = {}
    written: set[str] = set()
    for plugin in plugins:
        weights: dict[str, float] = defaultdict(float)
        for text, weight in plugin_fields(plugin, vocabulary):
            for word in words(text):
                surface.setdefault(stem(word), word)
                written.add(word)
            for term in terms(text):
                weights[term] += weight
        raw.append(weights)
    n = len(plugins)
    df: dict[str, int] = defaultdict(int)
    for weights in raw:
        for term in weights:
            df[term] += 1
    idf = {t: math.log(1 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}
    lengths = [sum(w.values()) for w in raw]
    average = sum(lengths) / max(len(lengths), 1) or 1.0
    postings: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for index, weights in enumerate(raw):
        k = K1 * (1 - B + B * lengths[index] / average)
        for term, w in weights.items():
            postings[term].append((index, w / (w + k)))
    spelled = _spellings(written, postings)
    typo_map: dict[str, set[str]] = defaultdict(set)
    for word in spelled:
        typo_map[word].add(word)
        for key in deletions(word):
            typo_map[key].add(word)
    return VocabularyIndex(
        plugins=tuple(p.name for p in plugins),
        postings={t: tuple(v) for t, v in postings.items()},
        idf=idf,
        typo_map={k: tuple(sorted(v)) for k, v in typo_map.items()},
        surface=surface,
        longest=max((len(w) for w in spelled), default=0),
        spelled=spelled,
        rarest=max(idf.values(), default=1.0),
    )


def _spellings(written: Iterable[str], postings: Mapping[str, object]) -> dict[str, tuple[str, ...]]:
    """The plugins' words of five letters or more, as written, each with the terms it counts as
    (its stem, and the word itself when that is a term too): what a near spelling can reach."""
    out: dict[str, tuple[str, ...]] = {}
    for word in written:
        if len(word) >= 5 and word.isalpha():
            found = tuple(dict.fromkeys(t for t in (stem(word), word) if t in postings))
            if found:
                out[word] = found
    return out


def normalize(text: str) -> Iterable[str]:
    """The normalizer the agent registry shares with the classifier."""
    return [t for t in terms(text) if " " not in t]
