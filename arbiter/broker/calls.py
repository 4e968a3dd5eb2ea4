"""What a routed request asks of one plugin: which command, with which parameters.

The dispatcher asks this for every try (the primary, each fallback) and the route service for
every phase of a plan before the first is sent, so a request that states too little is asked for
more instead of reaching a worker that would refuse it. Commands are chosen by
:class:`~arbiter.routing.commands.CommandIndex` and parameters bound by
:func:`~arbiter.routing.parameters.call_for`; both are pure, and what they cost is paid once per
text and snapshot here.
"""

from __future__ import annotations

from arbiter.broker import messages as svc
from arbiter.project.model import Plugin
from arbiter.routing.classify import bounded_text
from arbiter.routing.commands import CommandIndex
from arbiter.routing.parameters import BindingTable, Bound, Call, call_for

BEST_CACHE_SIZE = 4096
DEFAULT_TEXT_LIMIT = 4000


class Calls:
    """The command indexes and parameter bindings of one snapshot, with a bounded memo of the
    commands that read best for each text (repeated texts are common)."""

    def __init__(self) -> None:
        self.best: dict[tuple[str, str], tuple[str, ...]] = {}  # (plugin, text) -> commands
        self.indexes: dict[str, CommandIndex] = {}  # plugin -> its commands' terms
        self.bindings = BindingTable()
        self.text_limit = DEFAULT_TEXT_LIMIT

    def adopt(self, bindings: BindingTable | None = None, text_limit: int | None = None) -> None:
        """A new snapshot: forget what the old one's commands said. ``bindings`` and
        ``text_limit`` (``max_text_chars``) say how a request's parameters are read."""
        self.best.clear()
        self.indexes.clear()
        if bindings is not None:
            self.bindings = bindings
        if text_limit is not None:
            self.text_limit = text_limit

    def call_for(
        self, route: svc.RouteInput, plugin: Plugin, first: bool, from_text: bool = True, phase: bool = False
    ) -> Call:
        """What ``plugin`` is asked for ``route``: the requested command where it has one (the
        first plugin always does), else the commands that read most like the text, best first;
        with ``from_text``, the parameters are bound (given, then the text, then defaults) and the
        first command whose required ones all bind is taken. A chain's step (``from_text``
        false) sends its parameters as its chain gives them; a plan's later ``phase`` gets only
        the given parameters its command declares."""
        head = bounded_text(route.text, self.text_limit)  # a megabyte of text is read as routing reads it
        wanted = route.command
        if wanted and not phase and (first or any(c.name == wanted for c in plugin.invocable)):
            commands: tuple[str, ...] = (wanted,)
        else:
            commands = self.best_for_text(plugin, head)
        if not from_text:
            return Call(commands[0] if commands else None, Bound(route.parameters))
        return call_for(plugin.name, commands, head, route.parameters, self.bindings, declared_only=phase)

    def best_for_text(self, plugin: Plugin, text: str) -> tuple[str, ...]:
        """The plugin's commands that read most like ``text`` (found once per text and snapshot)."""
        key = (plugin.name, text)
        found = self.best.get(key)
        if found is None:
            if len(self.best) >= BEST_CACHE_SIZE:
                self.best.clear()
            index = self.indexes.get(plugin.name)
            if index is None:
                index = self.indexes[plugin.name] = CommandIndex(plugin)
            found = self.best[key] = index.best(text)
        return found
