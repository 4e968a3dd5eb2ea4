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
        if not self.vocab:
            return None
        wanted = set(terms(text))
        count = len(self.vocab)
        frequency: dict[str, int] = {}
        for words in self.vocab.values():
            for word in words & wanted:
                frequency[word] = frequency.get(word, 0) + 1

        def score(name: str) -> float:
            return sum(math.log(1 + count / frequency[w]) for w in self.vocab[name] & wanted)

        return max(self.vocab, key=lambda name: (score(name), -self.order[name]))


def choose_command(plugin: Plugin, text: str) -> str | None:
    """The name of the command whose name, description and keywords best share the text's terms."""
    return CommandIndex(plugin).choose(text)
