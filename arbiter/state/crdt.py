"""State-based replicated data types: counters, last-writer-wins registers and maps, and an
add-wins set.

Each type forms a join semilattice: ``merge`` is commutative, associative and idempotent, so
replicas that exchange whole states in any order, with losses and duplicates, end up equal.
Values are immutable: every operation returns a new value and leaves the old one untouched, so
a value can be published from one thread while another goes on changing its own copy.

``to_json`` gives plain JSON data tagged with ``"type"``; equal states give equal data (lists
are sorted, empty parts dropped). :func:`from_json` reads it back and rejects anything else
with a :class:`ValueError` that names the offending field.
"""

from __future__ import annotations

import time
from typing import Any, Callable, ClassVar, Mapping, TypeVar

from arbiter.state.jsondata import (
    as_plain,
    canonical_json,
    exact_fields,
    fresh,
    json_array,
    json_object,
    json_type,
    natural,
    node_id,
)

Tag = tuple[str, int]  # (node id, that node's counter): names one add of an OR-set
C = TypeVar("C", bound="Crdt")


def now_ms() -> int:
    """Wall-clock milliseconds: the default timestamp of a last-writer-wins write."""
    return time.time_ns() // 1_000_000


# -- the common base ------------------------------------------------------------------------


class Crdt:
    """What every replicated type offers: ``merge``, ``value``, ``to_json``."""

    __slots__ = ()
    kind: ClassVar[str]

    def merge(self: C, other: C) -> C:
        raise NotImplementedError

    def value(self) -> Any:
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def _parse(cls: type[C], data: dict[str, Any]) -> C:
        raise NotImplementedError

    def _same(self: C, other: Any) -> C:
        """``other`` when it is of this type; merging a counter into a set has no meaning."""
        if type(other) is not type(self):
            theirs = other.kind if isinstance(other, Crdt) else type(other).__name__
            raise TypeError(f"cannot merge a value of type {theirs!r} into one of type {self.kind!r}")
        return other

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_json() == other.to_json()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({canonical_json(self.to_json())})"


# -- counters -------------------------------------------------------------------------------


def _counts(data: Any, where: str) -> dict[str, int]:
    counts = {
        node_id(node, f"{where} key"): natural(n, f"{where}.{node}") for node, n in json_object(data, where).items()
    }
    return {node: n for node, n in counts.items() if n}


class GCounter(Crdt):
    """A grow-only counter: one count per node, each changed only by its node. Merge keeps each
    node's larger count (a count only grows, so the larger one has seen more); the value is the sum."""

    __slots__ = ("_counts",)
    kind = "g-counter"

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    @classmethod
    def _of(cls, counts: dict[str, int]) -> GCounter:
        made = cls()
        made._counts = {node: n for node, n in sorted(counts.items()) if n}
        return made

    def increment(self, node: str, n: int = 1) -> GCounter:
        node_id(node, "node")
        if natural(n, "increment") == 0:
            return self
        return GCounter._of({**self._counts, node: self._counts.get(node, 0) + n})

    def count(self, node: str) -> int:
        return self._counts.get(node, 0)

    def merge(self, other: GCounter) -> GCounter:
        theirs = self._same(other)._counts
        nodes = self._counts.keys() | theirs.keys()
        return GCounter._of({node: max(self._counts.get(node, 0), theirs.get(node, 0)) for node in nodes})

    def value(self) -> int:
        return sum(self._counts.values())

    def to_json(self) -> dict[str, Any]:
        return {"type": self.kind, "counts": dict(self._counts)}

    @classmethod
    def _parse(cls, data: dict[str, Any]) -> GCounter:
        exact_fields(data, cls.kind, ["type", "counts"])
        return cls._of(_counts(data["counts"], f"{cls.kind}.counts"))


class PNCounter(Crdt):
    """A counter that also goes down: increments and decrements are two grow-only counters, so
    a decrement is never undone by a merge; the value is their difference."""

    __slots__ = ("_up", "_down")
    kind = "pn-counter"

    def __init__(self) -> None:
        self._up = GCounter()
        self._down = GCounter()

    @classmethod
    def _of(cls, up: GCounter, down: GCounter) -> PNCounter:
        made = cls()
        made._up, made._down = up, down
        return made

    def increment(self, node: str, n: int = 1) -> PNCounter:
        return PNCounter._of(self._up.increment(node, n), self._down)

    def decrement(self, node: str, n: int = 1) -> PNCounter:
        return PNCounter._of(self._up, self._down.increment(node, n))

    def merge(self, other: PNCounter) -> PNCounter:
        theirs = self._same(other)
        return PNCounter._of(self._up.merge(theirs._up), self._down.merge(theirs._down))

    def value(self) -> int:
        return self._up.value() - self._down.value()

    def to_json(self) -> dict[str, Any]:
        return {"type": self.kind, "increments": dict(self._up._counts), "decrements": dict(self._down._counts)}

    @classmethod
    def _parse(cls, data: dict[str, Any]) -> PNCounter:
        exact_fields(data, cls.kind, ["type", "increments", "decrements"])
        up = GCounter._of(_counts(data["increments"], f"{cls.kind}.increments"))
        return cls._of(up, GCounter._of(_counts(data["decrements"], f"{cls.kind}.decrements")))


# -- last writer wins -----------------------------------------------------------------------


class LWWRegister(Crdt):
    """One value; the write with the greater ``(timestamp, node)`` wins. Equal timestamps are
    settled by node id, never by which state arrived last, so every replica picks the same
    winner. Timestamps are integers (milliseconds, or a logical clock) so that equality is
    exact. Should one node write twice with the same timestamp, the greater canonical JSON
    wins, which keeps merge commutative. A cleared register keeps its timestamp (a tombstone),
    so an older write arriving later cannot bring the value back."""

    __slots__ = ("_value", "_text", "_timestamp", "_node", "_deleted")
    kind = "lww-register"

    def __init__(self) -> None:
        self._value: Any = None
        self._text = "null"
        self._timestamp = 0
        self._node = ""  # the empty register: loses to any write
        self._deleted = False

    @classmethod
    def _of(cls, value: Any, text: str, timestamp: int, node: str, deleted: bool) -> LWWRegister:
        made = cls()
        made._value, made._text, made._timestamp, made._node, made._deleted = value, text, timestamp, node, deleted
        return made

    @property
    def timestamp(self) -> int:
        return self._timestamp

    @property
    def node(self) -> str:
        return self._node

    @property
    def deleted(self) -> bool:
        return self._deleted

    def _key(self) -> tuple[int, str, bool, str]:
        return (self._timestamp, self._node, self._deleted, self._text)

    def _stamp(self, timestamp: int | None) -> int:
        """The given timestamp, or now; never at or below this register's own, so a node's later
        write beats its earlier one even when the clock stepped back."""
        if timestamp is None:
            return max(now_ms(), self._timestamp + 1)
        return natural(timestamp, "timestamp")

    def set(self, node: str, value: Any, timestamp: int | None = None) -> LWWRegister:
        """Write ``value``; a write older than what the register holds changes nothing."""
        plain, text = as_plain(value, "value")
        return self.merge(LWWRegister._of(plain, text, self._stamp(timestamp), node_id(node, "node"), False))

    def clear(self, node: str, timestamp: int | None = None) -> LWWRegister:
        """Remove the value, by a write like any other (it can win or lose)."""
        return self.merge(LWWRegister._of(None, "null", self._stamp(timestamp), node_id(node, "node"), True))

    def merge(self, other: LWWRegister) -> LWWRegister:
        theirs = self._same(other)
        return self if self._key() >= theirs._key() else theirs  # both immutable: no copy needed

    def value(self) -> Any:
        return None if self._deleted else fresh(self._value, self._text)

    def _fields_json(self) -> dict[str, Any]:
        value = fresh(self._value, self._text)
        return {"value": value, "timestamp": self._timestamp, "node": self._node, "deleted": self._deleted}

    def to_json(self) -> dict[str, Any]:
        return {"type": self.kind, **self._fields_json()}

    @classmethod
    def _parse(cls, data: dict[str, Any]) -> LWWRegister:
        exact_fields(data, cls.kind, ["type", "value", "timestamp", "node", "deleted"])
        return cls._read(data, cls.kind)

    @classmethod
    def _read(cls, data: dict[str, Any], where: str) -> LWWRegister:
        plain, text = as_plain(data["value"], f"{where}.value")
        timestamp = natural(data["timestamp"], f"{where}.timestamp")
        deleted = data["deleted"]
        if type(deleted) is not bool:
            raise ValueError(f"{where}.deleted must be a boolean, not {json_type(deleted)}")
        node = data["node"]
        if node != "" or (plain, timestamp, deleted) != (None, 0, False):  # "" only in the empty register
            node_id(node, f"{where}.node")
        if deleted and plain is not None:
            raise ValueError(f"{where}.value must be null in a cleared register")
        return cls._of(plain, text, timestamp, node, deleted)


class LWWMap(Crdt):
    """Keys, each holding a :class:`LWWRegister`; a deleted key keeps its register as a tombstone,
    so a concurrent older write does not bring it back. Merge is per key."""

    __slots__ = ("_entries",)
    kind = "lww-map"

    def __init__(self) -> None:
        self._entries: dict[str, LWWRegister] = {}

    @classmethod
    def _of(cls, entries: dict[str, LWWRegister]) -> LWWMap:
        made = cls()
        made._entries = dict(sorted(entries.items()))
        return made

    def _write(self, key: str, change: Callable[[LWWRegister], LWWRegister]) -> LWWMap:
        if type(key) is not str:
            raise ValueError(f"key must be a string, not {json_type(key)}")
        return LWWMap._of({**self._entries, key: change(self._entries.get(key, _EMPTY))})

    def set(self, node: str, key: str, value: Any, timestamp: int | None = None) -> LWWMap:
        return self._write(key, lambda register: register.set(node, value, timestamp))

    def delete(self, node: str, key: str, timestamp: int | None = None) -> LWWMap:
        return self._write(key, lambda register: register.clear(node, timestamp))

    def get(self, key: str, default: Any = None) -> Any:
        register = self._entries.get(key)
        return default if register is None or register.deleted else register.value()

    def __contains__(self, key: object) -> bool:
        register = self._entries.get(key) if isinstance(key, str) else None
        return register is not None and not register.deleted

    def merge(self, other: LWWMap) -> LWWMap:
        theirs = self._same(other)._entries
        merged = dict(self._entries)
        for key, register in theirs.items():
            merged[key] = merged[key].merge(register) if key in merged else register
        return LWWMap._of(merged)

    def value(self) -> dict[str, Any]:
        return {key: register.value() for key, register in self._entries.items() if not register.deleted}

    def to_json(self) -> dict[str, Any]:
        return {"type": self.kind, "entries": {key: reg._fields_json() for key, reg in self._entries.items()}}

    @classmethod
    def _parse(cls, data: dict[str, Any]) -> LWWMap:
        exact_fields(data, cls.kind, ["type", "entries"])
        entries = {}
        for key, raw in json_object(data["entries"], f"{cls.kind}.entries").items():
            where = f"{cls.kind}.entries.{key}"
            exact_fields(json_object(raw, where), where, ["value", "timestamp", "node", "deleted"])
            node_id(raw["node"], f"{where}.node")  # an entry is always someone's write
            entries[key] = LWWRegister._read(raw, where)
        return cls._of(entries)


_EMPTY = LWWRegister()


# -- add-wins set ---------------------------------------------------------------------------


def _tag(data: Any, where: str) -> Tag:
    pair = json_array(data, where)
    if len(pair) != 2:
        raise ValueError(f"{where} must be a [node, counter] pair")
    return node_id(pair[0], f"{where}[0]"), natural(pair[1], f"{where}[1]", minimum=1)


class ORSet(Crdt):
    """An observed-remove set where a concurrent add wins over a remove. Each add is tagged
    (node id, that node's next counter); a remove turns only the tags of the element it has
    seen into tombstones. An add another replica did meanwhile carries a tag that remove never
    saw, so it survives the merge. Elements are any JSON data, told apart by canonical JSON.

    Tags in a tombstone are dropped from the live entries at once; merge unions both sides'
    tags and tombstones. A node's counter continues from the highest tag of that node the set
    holds, so a node id must not be reused by a fresh replica that lost its state."""

    __slots__ = ("_entries", "_tombstones")
    kind = "or-set"

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Any, frozenset[Tag]]] = {}  # canonical JSON -> (element, live tags)
        self._tombstones: frozenset[Tag] = frozenset()

    @classmethod
    def _of(cls, entries: dict[str, tuple[Any, frozenset[Tag]]], tombstones: frozenset[Tag]) -> ORSet:
        made = cls()
        made._tombstones = tombstones
        for text, (element, tags) in sorted(entries.items()):
            live = tags - tombstones
            if live:
                made._entries[text] = (element, live)
        return made

    def _next_tag(self, node: str) -> Tag:
        tags = [tag for _, live in self._entries.values() for tag in live]
        return node, 1 + max((n for owner, n in (*tags, *self._tombstones) if owner == node), default=0)

    def add(self, node: str, element: Any) -> ORSet:
        plain, text = as_plain(element, "element")
        tag = self._next_tag(node_id(node, "node"))
        _, tags = self._entries.get(text, (plain, frozenset()))
        return ORSet._of({**self._entries, text: (plain, tags | {tag})}, self._tombstones)

    def remove(self, element: Any) -> ORSet:
        """Remove the element as this replica sees it; adds it has not seen are left alone."""
        _, text = as_plain(element, "element")
        if text not in self._entries:
            return self
        entries = dict(self._entries)
        _, tags = entries.pop(text)
        return ORSet._of(entries, self._tombstones | tags)

    def __contains__(self, element: object) -> bool:
        try:
            return as_plain(element, "element")[1] in self._entries
        except ValueError:
            return False

    def merge(self, other: ORSet) -> ORSet:
        theirs = self._same(other)
        entries = dict(self._entries)
        for text, (element, tags) in theirs._entries.items():
            entries[text] = (element, entries[text][1] | tags) if text in entries else (element, tags)
        return ORSet._of(entries, self._tombstones | theirs._tombstones)

    def value(self) -> list[Any]:
        """The elements, ordered by canonical JSON (elements need not be hashable in Python)."""
        return [fresh(element, text) for text, (element, _) in self._entries.items()]

    def to_json(self) -> dict[str, Any]:
        entries = [
            {"element": fresh(element, text), "tags": sorted(map(list, tags))}
            for text, (element, tags) in self._entries.items()
        ]
        return {"type": self.kind, "entries": entries, "tombstones": sorted(map(list, self._tombstones))}

    @classmethod
    def _parse(cls, data: dict[str, Any]) -> ORSet:
        exact_fields(data, cls.kind, ["type", "entries", "tombstones"])
        where = f"{cls.kind}.tombstones"
        tombstones = frozenset(
            _tag(tag, f"{where}[{i}]") for i, tag in enumerate(json_array(data["tombstones"], where))
        )
        entries: dict[str, tuple[Any, frozenset[Tag]]] = {}
        owners: dict[Tag, str] = {}
        for i, raw in enumerate(json_array(data["entries"], f"{cls.kind}.entries")):
            where = f"{cls.kind}.entries[{i}]"
            exact_fields(json_object(raw, where), where, ["element", "tags"])
            plain, text = as_plain(raw["element"], f"{where}.element")
            if text in entries:
                raise ValueError(f"{where}.element appears twice: {text}")
            tags = frozenset(_tag(tag, f"{where}.tags[{j}]") for j, tag in enumerate(json_array(raw["tags"], where)))
            for tag in tags:
                if owners.setdefault(tag, text) != text:
                    raise ValueError(f"{where}.tags: tag {canonical_json(list(tag))} already tags another element")
            entries[text] = (plain, tags)
        return cls._of(entries, tombstones)


# -- reading and merging JSON ---------------------------------------------------------------

TYPES: Mapping[str, type[Crdt]] = {cls.kind: cls for cls in (GCounter, PNCounter, LWWRegister, ORSet, LWWMap)}


def from_json(data: Any) -> Crdt:
    """The value ``to_json`` gave, of the type its ``"type"`` names; ValueError when malformed."""
    kind = json_object(data, "a CRDT").get("type")
    cls = TYPES.get(kind) if type(kind) is str else None
    if cls is None:
        raise ValueError(f"unknown CRDT type {kind!r}; expected one of {', '.join(sorted(TYPES))}")
    return cls._parse(data)


def merge_json(stored: dict[str, Any] | None, incoming: dict[str, Any]) -> dict[str, Any]:
    """What to store after ``incoming`` arrives where ``stored`` was (None: nothing yet). Both
    are checked, so a store that writes only what this returns never holds a malformed value;
    TypeError when the two are of different types."""
    new = from_json(incoming)
    if stored is None:
        return new.to_json()
    return from_json(stored).merge(new).to_json()
