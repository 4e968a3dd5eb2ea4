"""Which words of a request say what is wanted, and which only give context.

"Make a slide deck out of last sprint's tickets" asks for a slide deck; the tickets are where its
content comes from. The main verb and its object name the deliverable; phrases opened by
*for*, *with*, *from*, *based on*, *out of*, *in*, *of our ...*, *using*, *about* and relative
clauses (*that*, *which*) mostly say where, for whom or from what, and so do elaborations
(*following*, *including*, *especially*, *such as*) and a possessor ("an insurance agency's
exec dashboard" is a dashboard; the agency says whose), and so does a relative clause without
its *that* ("turn the scope document *the engagement toolkit wrote* into a project plan": the
toolkit wrote the input, the plan is the deliverable). Relevance counts a context
word at :data:`CONTEXT` of a main-clause word, so the plugin that owns the deliverable leads and
the plugins the context names become collaborators; a context word still counts fully when the
main clause names no plugin at all ("fix the bug in my FastAPI endpoint"), because every plugin's
score is scaled alike.

A context phrase runs to the end of its clause (a comma, semicolon, colon, question or
exclamation mark, or a full stop). *into* and *as a* name the form of the deliverable ("put the
load test results into a spreadsheet") and count as main words. Weights are per term, the
highest of its occurrences; a bigram weighs the lesser of its words. :data:`CONTEXT` is
calibrated on the labelled requests the router is developed on (bench/bench_accuracy.py).
"""

from __future__ import annotations

import re

from arbiter.routing.text_index import STOPWORDS, stem

CONTEXT = 0.35  # a word in a context phrase, against 1 for a word of the main clause
# Words that open a context phrase. "of" only does before a possessive or a determiner ("the
# results of our load test"), not in a compound name ("bill of materials").
OPENERS = frozenset(
    "for with from in using via about within across during after before since that which who whose per".split()
)
OF_BEFORE = frozenset("our my your their his her its the this that these those last yesterday".split())
PAIRS = {("based", "on"), ("out", "of"), ("according", "to"), ("sized", "off"), ("such", "as")}
DELIVERABLE = frozenset({"into"})  # "as a"/"as an" too, checked with the next word
# Words that add detail to what was already asked ("..., following the payload spec", "...,
# especially the .NET 10 features"): context, like a phrase opened by "for".
ELABORATION = frozenset("following including especially particularly except excluding besides".split())
# A relative clause without "that" (a contact clause) opens with a determiner straight after a
# noun of the main clause, and ends after its verb: a past form (-ed, or one of these), or where
# a word of its own kind ends it. The noun is told from a verb without a tagger: not the first
# word of the clause (the imperative), not an -ing form, not a particle of a phrasal verb, and not
# the verb after "to" (or "please", "and", "or").
DETERMINERS = frozenset("the our my your their this these those its his her".split())
PAST_FORMS = frozenset(
    "wrote written made built gave given put sent kept left found got bought brought drew drawn ran began begun "
    "chose chosen did done took taken".split()
)
CONTACT_ENDS = frozenset("to through into onto toward towards so and".split())
PARTICLES = frozenset("back through away together along apart aside forward".split())
BEFORE_VERB = frozenset("to please and or".split())
# "'s" after a word that is not a pronoun makes it a possessor: "an insurance agency's
# dashboard" is a dashboard; the agency says whose.
POSSESSIVE = "'s"
_NOT_POSSESSORS = STOPWORDS | frozenset("there here let he she".split())

_PIECE = re.compile(r"[a-z0-9][a-z0-9+#]*(?:[.\-_][a-z0-9+#]+)*(?:['\u2019]s\b)?|[,;:!?()]|\.(?=\s|$)")
_JOINER = re.compile(r"[.\-_]")


def _pieces(text: str) -> list[str]:
    """Words (a possessor keeps its "'s") and clause marks."""
    return _PIECE.findall(text.lower().replace("\u2019", "'"))


def _opens_context(pieces: list[str], i: int) -> bool:
    word = pieces[i]
    after = pieces[i + 1] if i + 1 < len(pieces) else ""
    if word in OPENERS:
        return True
    if word == "of":
        return after in OF_BEFORE
    return (word, after) in PAIRS


def _opens_deliverable(pieces: list[str], i: int) -> bool:
    word = pieces[i]
    after = pieces[i + 1] if i + 1 < len(pieces) else ""
    return word in DELIVERABLE or (word == "as" and after in ("a", "an"))


def _possessor(piece: str) -> str | None:
    """The word before "'s" when it names an owner, not "it's" or "what's"."""
    if piece.endswith(POSSESSIVE):
        word = piece[: -len(POSSESSIVE)]
        return word if word not in _NOT_POSSESSORS else None
    return None


def _context_possessors(out: list[tuple[str, float]], start: int) -> None:
    """Make the possessor just added, and the modifiers before it in its noun phrase (back to
    ``start``, where the phrase began), context words."""
    for k in range(start, len(out)):
        out[k] = (out[k][0], min(out[k][1], CONTEXT))


def _after_noun(pieces: list[str], i: int, content_words: int) -> bool:
    """Does the word before ``pieces[i]`` look like a noun, so that a determiner here opens a
    contact clause rather than the verb's object? (See :data:`DETERMINERS`.)"""
    before = pieces[i - 1] if i else ""
    return (
        content_words >= 2
        and before[:1].isalnum()
        and before not in STOPWORDS
        and before not in PARTICLES
        and not before.endswith("ing")
        and (i < 2 or pieces[i - 2] not in BEFORE_VERB)
    )


def _ends_contact(piece: str) -> bool:
    return piece.endswith("ed") or piece in PAST_FORMS


def word_weights(text: str) -> list[tuple[str, float]]:
    """The request's content words in order (stemmed, as the text index reads them), each with
    its weight: 1 in a main clause, :data:`CONTEXT` in a context phrase, a contact clause or a
    possessor."""
    pieces = _pieces(text)
    out: list[tuple[str, float]] = []
    phrase = 1.0
    contact = False  # in a contact clause, which returns to the main clause after its verb
    content_words = 0  # content words so far in this clause
    noun_start = 0  # where the current run of content words began in ``out``
    for i, piece in enumerate(pieces):
        if not piece[0].isalnum():
            phrase, contact, content_words = 1.0, False, 0  # a clause ends, and its phrases with it
            noun_start = len(out)
            continue
        owner = _possessor(piece)
        piece = owner or piece.removesuffix(POSSESSIVE)
        if contact and piece in CONTACT_ENDS:
            phrase, contact = 1.0, False
        if _opens_context(pieces, i) or piece in ELABORATION:
            phrase, contact = CONTEXT, False
        elif _opens_deliverable(pieces, i):
            phrase, contact = 1.0, False
        elif phrase == 1.0 and piece in DETERMINERS and _after_noun(pieces, i, content_words):
            phrase, contact = CONTEXT, True
        parts = [piece, *(p for p in _JOINER.split(piece) if p)] if _JOINER.search(piece) else [piece]
        content = [w for w in parts if w not in STOPWORDS and len(w) > 1]
        if not content:
            noun_start = len(out)
        out.extend((stem(word), phrase) for word in content)
        content_words += bool(content)
        if owner:
            _context_possessors(out, noun_start)
            noun_start = len(out)
        if contact and content and _ends_contact(piece):
            phrase, contact = 1.0, False
    return out


def term_weights(text: str) -> dict[str, float]:
    """Each term of ``text`` (a stemmed word or a bigram of adjacent content words, as
    :func:`~arbiter.routing.text_index.terms` makes them) with its weight."""
    words = word_weights(text)
    weights: dict[str, float] = {}
    for word, weight in words:
        weights[word] = max(weights.get(word, 0.0), weight)
    for (a, wa), (b, wb) in zip(words, words[1:]):
        key = f"{a} {b}"
        weights[key] = max(weights.get(key, 0.0), min(wa, wb))
    return weights
