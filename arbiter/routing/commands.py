"""Which of a plugin's commands a routed request runs when it names none.

A routed request need not name a command; the worker still needs one. The plugin's invocable
parts (:attr:`~arbiter.project.model.Plugin.invocable`) are scored against the request's terms,
each term weighed by how few of the plugin's commands use it, so "model" in "add a Beanie
model" counts for more than "add", which half the commands start with.
"""

from __future__ import annotations

import math

from arbiter.project.model import Plugin
from arbiter.routing.text_index import terms


class CommandIndex:
    """The terms of each of one plugin's invocable parts, computed once (per snapshot): choosing
    a command then only reads the request's terms."""

    def __init__(self, plugin: Plugin):
        self.vocab = {
            c.name: frozenset(terms(" ".join((c.name.replace("-", " "), c.description, *c.keywords))))
            for c in plugin.invocable
        }
        self.order = {name: index for index, name in enumerate(self.vocab)}

    def choose(self, text: str) -> str | None:
        """The command whose name, description and keywords best share the text's terms; the first
        declared wins a tie."""
        best = self.best(text)
        return best[0] if best else None

    def best(self, text: str) -> tuple[str, ...]:
        """The commands that read most like the text: every one with the top score, in declared
        order (only the first declared when none shares a term). A tie is settled by whose
        parameters the text states; a command that reads less like the text is never taken
        for that alone, so a request that states too little is asked for more."""
        if not self.vocab:
            return ()
        wanted = set(terms(text))
        count = len(self.vocab)
        frequency: dict[str, int] = {}
        for words in self.vocab.values():
            for word in words & wanted:
                frequency[word] = frequency.get(word, 0) + 1
        scores = {
            name: sum(math.log(1 + count / frequency[w]) for w in words & wanted) for name, words in self.vocab.items()
        }
        top = max(scores.values())
        tied = tuple(name for name in self.vocab if scores[name] == top)
        return tied if top > 0 else tied[:1]
