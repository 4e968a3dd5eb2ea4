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


def choose_command(plugin: Plugin, text: str) -> str | None:
    """The name of the command whose name, description and keywords best share the text's terms."""
    wanted = set(terms(text))
    vocab = {
        c.name: set(terms(" ".join((c.name.replace("-", " "), c.description, *c.keywords)))) for c in plugin.invocable
    }
    if not vocab:
        return None
    count = len(vocab)
    frequency: dict[str, int] = {}
    for words in vocab.values():
        for word in words & wanted:
            frequency[word] = frequency.get(word, 0) + 1

    def score(name: str) -> float:
        return sum(math.log(1 + count / frequency[w]) for w in vocab[name] & wanted)

    return max(vocab, key=lambda name: (score(name), -list(vocab).index(name)))
