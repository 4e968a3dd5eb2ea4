"""Stage 1 of the pipeline: a request's facts, each with the evidence that produced it.

Domains, contexts and patterns come from the snapshot's vocabulary: DSL domains (keywords,
synonyms, file globs) and patterns (phrases, regexes), and the capabilities plugins declare in
their manifests. Plain Claude Code plugins declare none, so the classifier also scores every
plugin's *relevance* from the text index (:mod:`arbiter.vocabulary`): that is what routes
requests over ecosystems without capabilities or hand-written rules.

Complexity, urgency and duration are small, explicit heuristics (documented on the functions)
so that explain can say why a request was judged complex or urgent.

Classification reads a bounded head of the text (:func:`bounded_text`, ``max_text_chars`` in
``configs/routing.yaml``): everything after the classifier — rules, matcher, team — reads the
classification, so one long request cannot make routing slow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from arbiter.project.model import Plugin
from arbiter.routing.clauses import term_weights, word_weights
from arbiter.routing.globs import glob_regex
from arbiter.routing.text_index import VocabularyIndex, build_index, path_terms, stem, terms, words

NEAR_SPELLING = 0.75  # a word matched one edit away is weaker evidence than the word itself
DURATION_MS = {"simple": 600_000, "moderate": 1_800_000, "complex": 7_200_000}
COMPLEX_WORDS = frozenset(
    stem(w)
    for w in "architecture migrate migration refactor end-to-end entire platform-wide multi-tenant redesign "
    "overhaul production-grade orchestrate across".split()
)
URGENT = re.compile(
    r"\b(urgent|asap|immediately|critical|outage|emergency|hotfix|sev ?1|p0|right now|is down|broken)\b", re.I
)
RELAXED = re.compile(r"\b(whenever|someday|low priority|no rush|nice to have|eventually)\b", re.I)
WORD_SLACK = 100  # how far back from the limit a cut looks for whitespace rather than split a word


@dataclass(frozen=True)
class Scored:
    """A detected domain (or a plugin's relevance) with the evidence behind its score."""

    name: str
    score: float
    evidence: tuple[str, ...] = ()
    context: tuple[str, ...] = ()  # evidence words that came from context phrases, not the main clause
    main: float = 0.0  # the part of ``score`` that main-clause words earned (relevance only)


@dataclass(frozen=True)
class Lexicon:
    """Domain, context and pattern vocabulary, compiled once per snapshot."""

    domain_terms: Mapping[str, Mapping[str, str]]  # domain -> term -> surface word
    domain_globs: Mapping[str, tuple[tuple[str, re.Pattern[str]], ...]]
    synonyms: Mapping[str, str]  # stemmed word -> stemmed canonical word
    contexts: Mapping[str, str]  # term -> context name
    pattern_phrases: Mapping[str, tuple[str, ...]]  # pattern -> phrase terms
    pattern_regexes: Mapping[str, tuple[re.Pattern[str], ...]]


@dataclass(frozen=True)
class Classifier:
    """Everything classification needs, precomputed from a snapshot."""

    index: VocabularyIndex
    lexicon: Lexicon


@dataclass(frozen=True)
class Classification:
    text: str
    files: tuple[str, ...]
    caller: str | None
    domains: tuple[Scored, ...]
    contexts: tuple[Scored, ...]
    patterns: tuple[Scored, ...]
    complexity: str
    complexity_reason: str
    urgency: int
    estimated_duration: int
    relevance: tuple[Scored, ...]  # every plugin with any evidence, best first
    terms: tuple[str, ...] = field(default=())
    chars: int = 0  # length of the whole request text; more than len(text) when only a head was read
    content: float = 0.0  # how much the request says (:func:`content_of`): what relevance is measured against

    @property
    def truncated(self) -> bool:
        """Routing read only the head of the request (``text``), not all ``chars`` of it."""
        return self.chars > len(self.text)

    def truncation(self) -> dict[str, int] | None:
        """``textTruncated`` of the decision JSON: the request's length and how much was read."""
        return {"chars": self.chars, "readChars": len(self.text)} if self.truncated else None

    @property
    def domain_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.domains)

    def facts(self) -> dict[str, Any]:
        """The flat fact mapping the rules engine reads (see ``dsl/ir.py``)."""
        out: dict[str, Any] = {
            "text": self.text,
            "files": self.files,
            "caller": self.caller,
            "complexity": self.complexity,
            "urgency": self.urgency,
            "domains": self.domain_names,
        }
        out.update({f"domain.{d.name}": d.score for d in self.domains})
        out.update({f"context.{c.name}": True for c in self.contexts})
        out.update({f"pattern.{p.name}": True for p in self.patterns})
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "domain": list(self.domain_names),
            "complexity": self.complexity,
            "contexts": [c.name for c in self.contexts],
            "patterns": [p.name for p in self.patterns],
            "urgency": self.urgency,
            "estimatedDuration": self.estimated_duration,
            "evidence": {
                "domains": {d.name: {"score": round(d.score, 3), "evidence": list(d.evidence)} for d in self.domains},
                "contexts": {c.name: list(c.evidence) for c in self.contexts},
                "patterns": {p.name: list(p.evidence) for p in self.patterns},
                "complexity": self.complexity_reason,
            },
            **({"textTruncated": self.truncation()} if self.truncated else {}),
        }


# ---------------------------------------------------------------- building


def _phrase_terms(text: str) -> tuple[str, ...]:
    """A keyword or phrase as the term it must match: one stemmed word or a bigram."""
    toks = [stem(w) for w in words(text) if len(w) > 1]
    base = [t for t in toks if "-" not in t and "." not in t] or toks
    if len(base) >= 2:
        return tuple(f"{a} {b}" for a, b in zip(base, base[1:]))
    return tuple(base)


def build_lexicon(plugins: Sequence[Plugin], vocabulary: Mapping[str, Any] | None) -> Lexicon:
    vocabulary = vocabulary or {"domains": {}, "patterns": {}}
    domain_terms: dict[str, dict[str, str]] = {}
    domain_globs: dict[str, list[tuple[str, re.Pattern[str]]]] = {}
    synonyms: dict[str, str] = {}
    for name, spec in vocabulary.get("domains", {}).items():
        found = domain_terms.setdefault(name, {})
        for word in [name.replace("-", " "), *spec.get("keywords", [])]:
            for term in _phrase_terms(word):
                found[term] = word
        for alias, canonical in spec.get("synonyms", {}).items():
            synonyms[stem(alias.lower())] = stem(canonical.lower()) if " " not in canonical else canonical.lower()
        domain_globs[name] = [(g, glob_regex(g)) for g in spec.get("globs", [])]
    contexts: dict[str, str] = {}
    patterns: dict[str, list[str]] = {}
    regexes: dict[str, list[re.Pattern[str]]] = {}
    for plugin in plugins:
        caps = plugin.capabilities
        for domain in caps.domains:
            found = domain_terms.setdefault(domain, {})
            for term in _phrase_terms(domain.replace("-", " ")):
                found.setdefault(term, domain)
        for context in caps.contexts + caps.integrations:
            for term in _phrase_terms(context.replace("-", " ")):
                contexts.setdefault(term, context)
            contexts.setdefault(stem(context.replace("-", "").replace(".", "")), context)
        for pattern in caps.patterns:
            patterns.setdefault(pattern, []).extend(_phrase_terms(pattern.replace("-", " ")))
    for name, spec in vocabulary.get("patterns", {}).items():
        patterns.setdefault(name, []).extend(t for p in spec.get("phrases", []) for t in _phrase_terms(p))
        for body, flags in spec.get("regexes", []):
            flag_bits = (re.I if "i" in flags else 0) | (re.M if "m" in flags else 0) | (re.S if "s" in flags else 0)
            regexes.setdefault(name, []).append(re.compile(body, flag_bits))
    return Lexicon(
        domain_terms={k: dict(v) for k, v in domain_terms.items()},
        domain_globs={k: tuple(v) for k, v in domain_globs.items()},
        synonyms=synonyms,
        contexts=contexts,
        pattern_phrases={k: tuple(dict.fromkeys(v)) for k, v in patterns.items()},
        pattern_regexes={k: tuple(v) for k, v in regexes.items()},
    )


def build_classifier(plugins: Sequence[Plugin], vocabulary: Mapping[str, Any] | None = None) -> Classifier:
    return Classifier(build_index(plugins, vocabulary), build_lexicon(plugins, vocabulary))


# ---------------------------------------------------------------- classifying


def bounded_text(text: str, limit: int) -> str:
    """The first ``limit`` characters of ``text``, ending at whitespace when there is some in the
    last :data:`WORD_SLACK` of them, so the last word read is a whole word. Costs O(limit)
    whatever the length of ``text``: nothing reads past the cut."""
    if len(text) <= limit:
        return text
    for end in range(limit, max(limit - WORD_SLACK, 0), -1):
        if text[end].isspace():
            return text[:end]
    return text[:limit]


def _request_terms(text: str, files: Sequence[str], lexicon: Lexicon) -> tuple[list[str], list[str]]:
    """(text terms with synonyms applied, file terms)."""
    text_terms = [lexicon.synonyms.get(t, t) for t in terms(text)]
    file_terms = [t for f in files for t in path_terms(f)]
    return text_terms, file_terms


def _domains(text_terms: set[str], files: Sequence[str], lexicon: Lexicon) -> tuple[Scored, ...]:
    found = []
    for name, vocab in lexicon.domain_terms.items():
        evidence = sorted({vocab[t] for t in text_terms if t in vocab})
        globs = [g for g, rx in lexicon.domain_globs.get(name, ()) if any(rx.match(f) for f in files)]
        hits = len(evidence) + 0.5 * len(globs)
        if hits:
            score = round(min(1.0, 0.4 + 0.3 * hits), 3)
            found.append(Scored(name, score, tuple(evidence) + tuple(f"file:{g}" for g in globs)))
    return tuple(sorted(found, key=lambda d: (-d.score, d.name)))


def _contexts(all_terms: set[str], lexicon: Lexicon) -> tuple[Scored, ...]:
    found: dict[str, list[str]] = {}
    for term in all_terms:
        context = lexicon.contexts.get(term)
        if context:
            found.setdefault(context, []).append(term)
    return tuple(Scored(c, 1.0, tuple(sorted(e))) for c, e in sorted(found.items()))


def _patterns(text: str, text_terms: set[str], lexicon: Lexicon) -> tuple[Scored, ...]:
    found = []
    for name in sorted(set(lexicon.pattern_phrases) | set(lexicon.pattern_regexes)):
        evidence = [t for t in lexicon.pattern_phrases.get(name, ()) if t in text_terms]
        evidence += [f"/{rx.pattern}/" for rx in lexicon.pattern_regexes.get(name, ()) if rx.search(text)]
        if evidence:
            found.append(Scored(name, 1.0, tuple(evidence)))
    return tuple(found)


def complexity_of(text: str, files: Sequence[str], domains: Sequence[Scored]) -> tuple[str, str]:
    """One point each for: work spanning several domains, a long request (over 30 words), more
    than three files, words of large work (architecture, migrate, refactor, ...). 0 points is
    simple, 1-2 moderate, 3 or more complex."""
    reasons = []
    tokens = words(text)
    if len(domains) >= 2:
        reasons.append(f"spans {len(domains)} domains")
    if len(tokens) > 30:
        reasons.append("long request")
    if len(files) > 3:
        reasons.append(f"{len(files)} files")
    big = sorted({w for w in tokens if stem(w) in COMPLEX_WORDS})
    if big:
        reasons.append("large-scope words: " + ", ".join(big))
    level = "simple" if not reasons else "moderate" if len(reasons) <= 2 else "complex"
    return level, "; ".join(reasons) or "single domain, short request"


def urgency_of(text: str) -> int:
    """5 by default; 8-10 for words of urgency (one more per extra signal); 2 for relaxed words."""
    hits = len(URGENT.findall(text))
    if hits:
        return min(10, 7 + hits)
    return 2 if RELAXED.search(text) else 5


def _relevance(
    all_terms: Sequence[str],
    index: VocabularyIndex,
    weights: Mapping[str, float] | None = None,
) -> tuple[Scored, ...]:
    """Each plugin's relevance: the sum over the request's terms of the term's rarity times the
    plugin's saturated use of it, times the term's weight in the request (:mod:`clauses`) and
    :data:`NEAR_SPELLING` when the plugin uses a near spelling of it rather than the word."""
    weights = weights or {}
    scores = [0.0] * len(index.plugins)
    main = [0.0] * len(index.plugins)
    evidence: list[dict[str, float]] = [{} for _ in index.plugins]
    for term in dict.fromkeys(all_terms):
        said = weights.get(term, 1.0)
        for known in index.lookup(term):
            factor = said * (1.0 if known == term else NEAR_SPELLING)
            idf = index.idf[known]
            for plugin, weight in index.postings[known]:
                gain = idf * weight * factor
                scores[plugin] += gain
                if said >= 1.0:
                    main[plugin] += gain
                evidence[plugin][known] = evidence[plugin].get(known, 0.0) + gain
    ranked = []
    for i, score in enumerate(scores):
        if score > 0:
            top = sorted(evidence[i].items(), key=lambda kv: -kv[1])[:6]
            words_ = tuple(index.surface.get(t, t) for t, _ in top)
            context = tuple(index.surface.get(t, t) for t, _ in top if weights.get(t, 1.0) < 1.0)
            ranked.append(Scored(index.plugins[i], round(score, 4), words_, context, round(main[i], 4)))
    return tuple(sorted(ranked, key=lambda s: (-s.score, s.name)))


def content_of(said: Sequence[tuple[str, float]], index: VocabularyIndex) -> float:
    """How much a request says: over its distinct words, each word's weight in the request
    (:mod:`clauses`) times its rarity among the plugins; a word no plugin uses (nor a near
    spelling of it) counts as the rarest. A long request or one about things no plugin speaks
    of says more than any plugin's relevance can explain, and the no-route gate
    (:func:`~arbiter.routing.match.routable`) measures relevance against it."""
    weights: dict[str, float] = {}
    for word, weight in said:
        weights[word] = max(weights.get(word, 0.0), weight)
    total = 0.0
    for word, weight in weights.items():
        known = index.lookup(word)
        total += weight * (index.idf[known[0]] if known else index.rarest)
    return total


def classify(
    text: str,
    files: Sequence[str],
    classifier: Classifier,
    caller: str | None = None,
    chars: int | None = None,
) -> Classification:
    """The facts of a request. ``text`` is what routing reads (see :func:`bounded_text`);
    ``chars``, the length of the whole request when that was longer."""
    lexicon = classifier.lexicon
    text_terms, file_terms = _request_terms(text, files, lexicon)
    term_set = set(text_terms)
    domains = _domains(term_set, files, lexicon)
    weights: dict[str, float] = {}
    for term, weight in term_weights(text).items():  # keyed as the text terms are: synonyms applied
        said = lexicon.synonyms.get(term, term)
        weights[said] = max(weights.get(said, 0.0), weight)
    relevance = _relevance(text_terms + file_terms, classifier.index, weights)
    complexity, reason = complexity_of(text, files, domains)
    return Classification(
        text=text,
        files=tuple(files),
        caller=caller,
        domains=domains,
        contexts=_contexts(term_set | set(file_terms), lexicon),
        patterns=_patterns(text, term_set, lexicon),
        complexity=complexity,
        complexity_reason=reason,
        urgency=urgency_of(text),
        estimated_duration=DURATION_MS[complexity],
        relevance=relevance,
        terms=tuple(t for t in dict.fromkeys(text_terms + file_terms) if " " not in t),
        chars=max(chars or 0, len(text)),
        content=content_of(word_weights(text), classifier.index),
    )
