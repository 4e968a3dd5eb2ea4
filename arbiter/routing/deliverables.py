"""What each plugin makes or does, and how well a request's main clause asks for it.

A plugin's commands and skills say what it produces in their names and the first sentence of
their descriptions: ``create-pr`` creates a PR, ``deploy:rollback`` rolls a deployment back,
"Generate Ansible playbooks ..." makes playbooks. The *action index* holds only that text, one
document per plugin, scored like the text index (rare words count more; "generate", "design"
or "create", in every plugin's command names, count for almost nothing, so a generic verb
carries little and the object carries the domain).

A request's main clause (:mod:`clauses`: the words that are not context) names what is wanted.
Its match against the action index is the plugin's *action* score: when two plugins' words
meet in a request, the one whose commands produce the main clause's deliverable gains, the one
named only where the content comes from does not.
"""

from __future__ import annotations

import os
import re
from typing import Mapping, Sequence

from arbiter.project.model import Plugin
from arbiter.routing.text_index import VocabularyIndex, index_fields

W_ACTION_NAME, W_ACTION_SENTENCE = 2.0, 1.0
KINDS = tuple(os.environ.get("ARB_KINDS", "command,skill").split(","))
_SENTENCE = re.compile(r"(?<=[.!?])\s|\n")


def first_sentence(text: str) -> str:
    """The first sentence of a description: what the component does, before how and when."""
    return _SENTENCE.split(text.strip(), maxsplit=1)[0] if text else ""


def action_fields(plugin: Plugin) -> list[tuple[str, float]]:
    """A plugin's commands' and skills' names (less the plugin's prefix) and first sentences."""
    out: list[tuple[str, float]] = []
    for comp in plugin.components():
        if comp.kind not in KINDS:
            continue
        name = comp.name.rsplit(":", 1)[-1].strip("/")
        out.append((re.sub(r"[-_/]", " ", name), W_ACTION_NAME))
        out.append((first_sentence(comp.description), W_ACTION_SENTENCE))
    return out


def build_action_index(plugins: Sequence[Plugin]) -> VocabularyIndex:
    return index_fields([p.name for p in plugins], [action_fields(p) for p in plugins])


def action_scores(weights: Mapping[str, float], index: VocabularyIndex) -> list[float]:
    """Each plugin's action score: over the request's main-clause terms (weight 1), the term's
    rarity among the action documents times the plugin's saturated use of it."""
    scores = [0.0] * len(index.plugins)
    for term, said in weights.items():
        if said < 1.0:
            continue
        for plugin, weight in index.postings.get(term, ()):
            scores[plugin] += index.idf[term] * weight
    return scores
