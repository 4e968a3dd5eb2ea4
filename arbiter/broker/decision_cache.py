"""Decisions the broker reuses: one per (text, files, caller) while the snapshot and the health
that made it hold (circuit states, learned success rates, which plugins have live workers).

Classifying and scoring a text is the dear part of a routed request, and clients repeat texts.
A cached decision is encoded once; each request splices in its own ``requestId``, and its row in
the decision log points at the row of the request that made the decision.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from arbiter.store.decisions import RowTemplate

CACHE_SIZE = 4096

Key = tuple[str, tuple[str, ...], "str | None"]
Phase = tuple[str, str, tuple[str, ...]]  # (domain, plugin, the domains it waits for)


@dataclass(frozen=True)
class Decided:
    """A decision as the broker reuses it for every request with the same text."""

    user_input: str | None
    primary: str | None
    plan: tuple[str, ...]  # primary, then fallbacks in order
    collaborators: tuple[str, ...]
    tail: bytes  # the encoded decision after the requestId value
    row: RowTemplate  # its row in the decision log, converted once
    phases: tuple[Phase, ...] = ()  # the collaboration plan, when there is one to run
    unserved: tuple[str, ...] = ()  # plugins that fit better but no live worker serves

    @classmethod
    def of(cls, data: dict[str, Any], origin: str = "broker") -> Decided:
        routing = data.get("routingDecision") or {}
        primary = routing.get("primaryPlugin")
        phases = (routing.get("collaborationPlan") or {}).get("phases") or []
        head = b'{"requestId":' + orjson.dumps(data["requestId"])
        encoded = orjson.dumps(data)
        if not encoded.startswith(head):
            raise ValueError("a decision's JSON must start with its requestId")
        plan = (primary, *routing.get("fallbackPlugins", ())) if primary else ()
        collaborators = tuple(p["plugin"] for p in phases[1:])
        row = RowTemplate.of(data, origin)
        steps = tuple((p["domain"], p["plugin"], tuple(p.get("dependencies") or ())) for p in phases)
        unserved = tuple(routing.get("unservedPlugins") or ())
        return cls(data.get("userInput"), primary, plan, collaborators, encoded[len(head) :], row, steps, unserved)

    def wire(self) -> list[bytes]:
        """Two frames: what the broker reads of the decision, and its encoded JSON as it is. A
        decider process answers with them, so the broker neither parses nor encodes a decision."""
        head = [
            self.user_input,
            self.primary,
            self.plan,
            self.collaborators,
            self.row.request_id,
            self.row.wire(),
            self.phases,
            self.unserved,
        ]
        return [orjson.dumps(head), self.tail]

    @classmethod
    def from_wire(cls, frames: list[bytes]) -> Decided:
        user_input, primary, plan, collaborators, request_id, row, phases, unserved = orjson.loads(frames[0])
        return cls(
            user_input,
            primary,
            tuple(plan),
            tuple(collaborators),
            frames[1],
            RowTemplate.of_values(request_id, row),
            tuple((domain, plugin, tuple(needs)) for domain, plugin, needs in phases),
            tuple(unserved),
        )

    def json_for(self, request_id: str) -> orjson.Fragment:
        """The decision as it reads for one request, ready to embed in a reply."""
        return orjson.Fragment(b'{"requestId":' + orjson.dumps(request_id) + self.tail)


class DecisionCache:
    """Least recently used first out; emptied whenever the snapshot or the plugins' health changes."""

    def __init__(self, size: int = CACHE_SIZE):
        self._size = size
        self._entries: OrderedDict[Key, Decided] = OrderedDict()
        self.generation = 0  # moves on with every clear: a decision asked before it is not kept

    def get(self, key: Key) -> Decided | None:
        hit = self._entries.get(key)
        if hit is not None:
            self._entries.move_to_end(key)
        return hit

    def put(self, key: Key, decided: Decided, generation: int | None = None) -> None:
        """Keep ``decided``, unless the cache was cleared since it was asked for (``generation``):
        a decision made under the old snapshot or circuit states is used once, not remembered."""
        if generation is not None and generation != self.generation:
            return
        self._entries[key] = decided
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
        self.generation += 1
