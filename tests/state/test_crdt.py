"""The replicated types: merge is a join (commutative, associative, idempotent); replicas that
receive the same states in any order, with duplicates, agree; each type means what it says
(counter arithmetic, add-wins removes, last writer by (timestamp, node)); JSON round-trips, and
malformed JSON is refused with a message naming the field."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arbiter.state.crdt import (
    TYPES,
    Crdt,
    GCounter,
    LWWMap,
    LWWRegister,
    ORSet,
    PNCounter,
    canonical_json,
    from_json,
    merge_json,
)

NODES = ("a", "b", "c")  # replica i writes as NODES[i]: a node id belongs to one replica
KINDS = sorted(TYPES)
SETTINGS = settings(max_examples=100, deadline=None)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=3)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3),
    max_leaves=5,
)
elements = st.sampled_from(["x", "y", 1, [1], {"k": "v"}]) | json_values  # few distinct ones, so adds and removes meet
timestamps = st.integers(0, 3) | st.none()  # small: equal timestamps (ties) are common; None: the clock
keys = st.sampled_from(["k1", "k2", "k3"])

OPERATIONS: dict[str, st.SearchStrategy] = {
    "g-counter": st.tuples(st.just("increment"), st.integers(0, 5)),
    "pn-counter": st.tuples(st.sampled_from(["increment", "decrement"]), st.integers(0, 5)),
    "lww-register": st.tuples(st.just("set"), json_values, timestamps) | st.tuples(st.just("clear"), timestamps),
    "or-set": st.tuples(st.sampled_from(["add", "remove"]), elements),
    "lww-map": st.tuples(st.just("set"), keys, json_values, timestamps)
    | st.tuples(st.just("delete"), keys, timestamps),
}


def apply(state: Any, node: str, operation: tuple) -> Any:
    """One local operation, written as the replica of ``node`` does it."""
    name, *args = operation
    if name in ("increment", "decrement", "add"):
        return getattr(state, name)(node, *args)
    if name == "remove":
        return state.remove(*args)
    if name in ("set", "delete") and isinstance(state, LWWMap):
        return getattr(state, name)(node, *args)
    if name == "set":
        value, timestamp = args
        return state.set(node, value, timestamp)
    return state.clear(node, *args)


@st.composite
def histories(draw, kind: str) -> list[tuple[int, tuple]]:
    """Steps of three replicas: a local operation by replica i, or replica i merging replica j's state."""
    step = st.tuples(st.integers(0, 2), OPERATIONS[kind] | st.tuples(st.just("merge"), st.integers(0, 2)))
    return draw(st.lists(step, max_size=20))


def run(kind: str, history: list[tuple[int, tuple]]) -> tuple[list[Crdt], list[Crdt]]:
    """The replicas' final states, and every state any replica passed through (the messages it could have sent)."""
    replicas = [TYPES[kind]() for _ in NODES]
    seen = list(replicas)
    for i, operation in history:
        if operation[0] == "merge":
            replicas[i] = replicas[i].merge(replicas[operation[1]])
        else:
            replicas[i] = apply(replicas[i], NODES[i], operation)
        seen.append(replicas[i])
    return replicas, seen


def fold(kind: str, states: list[Crdt]) -> Crdt:
    result = TYPES[kind]()
    for state in states:
        result = result.merge(state)
    return result


# -- the join laws ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(data=st.data())
def test_merge_is_a_join_and_json_round_trips(kind, data):
    _, seen = run(kind, data.draw(histories(kind)))
    for state in seen:
        copy = from_json(json.loads(json.dumps(state.to_json())))
        assert copy == state and copy.to_json() == state.to_json()
        assert merge_json(None, state.to_json()) == state.to_json()
    a, b, c = (data.draw(st.sampled_from(seen)) for _ in range(3))
    assert a.merge(b).to_json() == b.merge(a).to_json()
    assert a.merge(b).merge(c).to_json() == a.merge(b.merge(c)).to_json()
    assert a.merge(a).to_json() == a.to_json()
    assert a.merge(b).merge(b).to_json() == a.merge(b).to_json()
    assert merge_json(a.to_json(), b.to_json()) == a.merge(b).to_json()  # what the store does


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(data=st.data())
def test_replicas_converge_whatever_the_order_and_duplicates(kind, data):
    finals, seen = run(kind, data.draw(histories(kind)))
    shuffled = data.draw(st.permutations(seen))
    duplicates = data.draw(st.lists(st.sampled_from(seen), max_size=10))
    reference = fold(kind, seen).to_json()
    assert fold(kind, shuffled).to_json() == reference
    assert (
        fold(kind, [*shuffled[: len(shuffled) // 2], *duplicates, *shuffled[len(shuffled) // 2 :]]).to_json()
        == reference
    )
    # Every replica, having received everyone's final state, holds the same state.
    assert {canonical_json(r.merge(fold(kind, finals)).to_json()) for r in finals} == {canonical_json(reference)}


# -- what each type means -----------------------------------------------------------------------


@SETTINGS
@given(history=histories("pn-counter"))
def test_pn_counter_is_increments_minus_decrements(history):
    finals, _ = run("pn-counter", history)
    expected = sum(op[1] if op[0] == "increment" else -op[1] for _, op in history if op[0] != "merge")
    assert fold("pn-counter", finals).value() == expected


@SETTINGS
@given(history=histories("g-counter"))
def test_g_counter_counts_every_increment_once(history):
    finals, seen = run("g-counter", history)
    assert fold("g-counter", [*seen, *seen]).value() == sum(op[1] for _, op in history if op[0] != "merge")


class SetSpec:
    """The OR-set as specified, without tags: an element is in when some add of it has been
    seen by no remove of it. Each add is a distinct event."""

    def __init__(self, adds: dict[int, str] | None = None, removed: frozenset[int] = frozenset()):
        self.adds = dict(adds or {})
        self.removed = removed

    def add(self, event: int, element: Any) -> SetSpec:
        return SetSpec({**self.adds, event: canonical_json(element)}, self.removed)

    def remove(self, element: Any) -> SetSpec:
        observed = {e for e, text in self.adds.items() if text == canonical_json(element)}
        return SetSpec(self.adds, self.removed | observed)

    def merge(self, other: SetSpec) -> SetSpec:
        return SetSpec({**self.adds, **other.adds}, self.removed | other.removed)

    def value(self) -> list[str]:
        return sorted({text for e, text in self.adds.items() if e not in self.removed})


def texts(state: ORSet) -> list[str]:
    return sorted(canonical_json(e) for e in state.value())


@SETTINGS
@given(history=histories("or-set"))
def test_or_set_follows_the_add_wins_specification(history):
    replicas, specs = [ORSet() for _ in NODES], [SetSpec() for _ in NODES]
    for event, (i, operation) in enumerate(history):
        if operation[0] == "merge":
            replicas[i] = replicas[i].merge(replicas[operation[1]])
            specs[i] = specs[i].merge(specs[operation[1]])
        elif operation[0] == "add":
            replicas[i] = replicas[i].add(NODES[i], operation[1])
            specs[i] = specs[i].add(event, operation[1])
        else:
            replicas[i] = replicas[i].remove(operation[1])
            specs[i] = specs[i].remove(operation[1])
        assert texts(replicas[i]) == specs[i].value()
    merged_spec = specs[0].merge(specs[1]).merge(specs[2])
    assert texts(fold("or-set", replicas)) == merged_spec.value()


def test_or_set_remove_removes_only_what_it_observed():
    base = ORSet().add("a", "x")
    on_b = base.remove("x")  # b saw a's add, and removes it
    on_a = base.add("a", "x")  # meanwhile a adds x again: a tag b never saw
    assert "x" in on_b.merge(on_a) and "x" in on_a.merge(on_b)
    assert "x" not in on_b.merge(base)  # the add b did see stays removed
    concurrent = ORSet().add("c", "x")  # c's add, unseen by b
    assert on_b.merge(concurrent).value() == ["x"]
    assert "x" not in ORSet().remove("x")  # removing what is not there changes nothing


def test_or_set_elements_are_json_told_apart_by_canonical_text():
    state = ORSet().add("a", {"b": 1, "a": [1, 2]}).add("a", (1, 2)).add("a", 1).add("a", 1.0).add("a", True)
    assert {"a": [1, 2], "b": 1} in state and [1, 2] in state
    assert state.value() == [1, 1.0, [1, 2], True, {"a": [1, 2], "b": 1}]  # 1, 1.0 and true are different JSON
    state.value()[2].append("changed")  # what is handed out is a copy
    assert [1, 2] in state and from_json(state.to_json()) == state
    assert state.remove((1, 2)).value() == [1, 1.0, True, {"a": [1, 2], "b": 1}]


@SETTINGS
@given(value_a=json_values, value_b=json_values, timestamp=st.integers(0, 10))
def test_lww_ties_go_to_the_greater_node_in_either_merge_order(value_a, value_b, timestamp):
    from_a = LWWRegister().set("a", value_a, timestamp)
    from_b = LWWRegister().set("b", value_b, timestamp)
    for merged in (from_a.merge(from_b), from_b.merge(from_a)):
        assert (merged.node, merged.to_json()["value"]) == ("b", from_b.to_json()["value"])
    maps = LWWMap().set("a", "k", value_a, timestamp), LWWMap().set("b", "k", value_b, timestamp)
    assert maps[0].merge(maps[1]).to_json() == maps[1].merge(maps[0]).to_json() == maps[1].to_json()


@SETTINGS
@given(history=histories("lww-register"))
def test_lww_register_keeps_the_greatest_write(history):
    finals, seen = run("lww-register", history)
    merged = fold("lww-register", finals)
    writes = [r for r in seen if r.node]  # every write that took effect, and nothing else
    if writes:
        best = max(writes, key=lambda r: (r.timestamp, r.node, r.deleted, canonical_json(r.to_json()["value"])))
        assert merged.to_json() == best.to_json()


def test_lww_register_basics():
    register = LWWRegister().set("a", "first", 10)
    assert register.set("a", "stale", 5).value() == "first"  # an older write changes nothing
    assert register.set("b", "later", 11).value() == "later"
    assert register.clear("b", 9).value() == "first" and register.clear("b", 11).value() is None
    assert register.clear("b", 11).set("a", "old", 10).value() is None  # the tombstone holds off older writes
    clocked = LWWRegister().set("a", 1).set("a", 2)  # default timestamps: later write wins even within a millisecond
    assert clocked.value() == 2
    same = LWWRegister().set("a", "x", 3), LWWRegister().set("a", "y", 3)  # one node, one timestamp, two values
    assert same[0].merge(same[1]).to_json() == same[1].merge(same[0]).to_json()
    held = LWWRegister().set("a", {"list": [1]}, 1)
    held.value()["list"].append(2)
    assert held.value() == {"list": [1]}  # what is handed out is a copy


def test_lww_map_set_delete_and_merge():
    on_a = LWWMap().set("a", "colour", "red", 1).set("a", "size", 3, 1)
    on_b = on_a.delete("b", "colour", 2)
    late = on_a.set("a", "colour", "blue", 1)  # same timestamp as the first write: no newer than the delete
    merged = on_b.merge(late)
    assert merged.value() == {"size": 3} and "colour" not in merged and merged.get("colour", "none") == "none"
    assert merged.merge(LWWMap().set("c", "colour", "green", 3)).value() == {"colour": "green", "size": 3}


def test_pn_counter_basics():
    counter = PNCounter().increment("a", 5).decrement("a", 2).decrement("b")
    assert counter.value() == 2
    assert counter.merge(PNCounter().increment("a", 3)).value() == 2  # a's 3 is part of a's 5
    assert counter.merge(PNCounter().increment("c", 3)).value() == 5
    assert GCounter().increment("a", 0).to_json() == GCounter().to_json() == {"type": "g-counter", "counts": {}}


# -- refusals ---------------------------------------------------------------------------------

REGISTER = {"type": "lww-register", "value": 1, "timestamp": 1, "node": "a", "deleted": False}
ENTRY = {"element": "x", "tags": [["a", 1]]}
MALFORMED: list[tuple[Any, str]] = [
    ([], "a CRDT must be a JSON object, not an array"),
    ({"counts": {}}, "unknown CRDT type None"),
    ({"type": "bag"}, "unknown CRDT type 'bag'"),
    ({"type": "g-counter"}, "g-counter: missing field 'counts'"),
    ({"type": "g-counter", "counts": {}, "extra": 1}, "g-counter: unexpected field 'extra'"),
    ({"type": "g-counter", "counts": {"a": -1}}, "g-counter.counts.a must be an integer >= 0, not -1"),
    ({"type": "g-counter", "counts": {"a": 1.5}}, "g-counter.counts.a must be an integer >= 0, not a number"),
    ({"type": "g-counter", "counts": {"a": True}}, "g-counter.counts.a must be an integer >= 0, not a boolean"),
    ({"type": "g-counter", "counts": {"": 1}}, "g-counter.counts key must be a non-empty string"),
    ({"type": "g-counter", "counts": [1]}, "g-counter.counts must be a JSON object, not an array"),
    (
        {"type": "pn-counter", "increments": {}, "decrements": {"b": -2}},
        "pn-counter.decrements.b must be an integer >= 0",
    ),
    ({**REGISTER, "timestamp": "5"}, "lww-register.timestamp must be an integer >= 0, not a string"),
    ({**REGISTER, "timestamp": -1}, "lww-register.timestamp must be an integer >= 0, not -1"),
    ({**REGISTER, "node": 3}, "lww-register.node must be a non-empty string (a node id), not an integer"),
    ({**REGISTER, "node": ""}, "lww-register.node must be a non-empty string"),
    ({**REGISTER, "deleted": "no"}, "lww-register.deleted must be a boolean, not a string"),
    ({**REGISTER, "deleted": True}, "lww-register.value must be null in a cleared register"),
    ({"type": "or-set", "entries": [], "tombstones": {}}, "or-set.tombstones must be a JSON array, not an object"),
    (
        {"type": "or-set", "entries": [], "tombstones": [["a", 0]]},
        "or-set.tombstones[0][1] must be an integer >= 1, not 0",
    ),
    ({"type": "or-set", "entries": [], "tombstones": [["a"]]}, "or-set.tombstones[0] must be a [node, counter] pair"),
    ({"type": "or-set", "entries": [{"element": "x"}], "tombstones": []}, "or-set.entries[0]: missing field 'tags'"),
    ({"type": "or-set", "entries": [ENTRY, ENTRY], "tombstones": []}, 'or-set.entries[1].element appears twice: "x"'),
    (
        {"type": "or-set", "entries": [ENTRY, {"element": "y", "tags": [["a", 1]]}], "tombstones": []},
        'or-set.entries[1].tags: tag ["a",1] already tags another element',
    ),
    ({"type": "lww-map", "entries": {"k": {**REGISTER}}}, "lww-map.entries.k: unexpected field 'type'"),
    (
        {"type": "lww-map", "entries": {"k": {"value": None, "timestamp": 0, "node": "", "deleted": False}}},
        "lww-map.entries.k.node must be a non-empty string",
    ),
    (
        {"type": "lww-map", "entries": {"k": {"value": 1, "timestamp": 1.0, "node": "a", "deleted": False}}},
        "lww-map.entries.k.timestamp must be an integer >= 0, not a number",
    ),
]


@pytest.mark.parametrize(("data", "message"), MALFORMED)
def test_malformed_json_is_refused_naming_the_field(data, message):
    with pytest.raises(ValueError) as caught:
        from_json(data)
    assert message in str(caught.value)
    with pytest.raises(ValueError):
        merge_json(None, data)


BAD_OPERATIONS: list[tuple[Callable[[], Any], str]] = [
    (lambda: GCounter().increment("a", -1), "increment must be an integer >= 0, not -1"),
    (lambda: PNCounter().decrement("a", True), "increment must be an integer >= 0, not a boolean"),
    (lambda: GCounter().increment("", 1), "node must be a non-empty string"),
    (lambda: ORSet().add("a", object()), "element must be JSON data"),
    (lambda: ORSet().add("a", float("nan")), "element must be JSON data"),
    (lambda: LWWRegister().set("a", 1, 1.5), "timestamp must be an integer >= 0, not a number"),
    (lambda: LWWMap().set("a", 3, "v"), "key must be a string, not an integer"),
]


@pytest.mark.parametrize(("operation", "message"), BAD_OPERATIONS)
def test_bad_operations_are_refused(operation, message):
    with pytest.raises(ValueError) as caught:
        operation()
    assert message in str(caught.value)


def test_merging_different_types_is_a_type_error():
    with pytest.raises(TypeError, match="cannot merge a value of type 'pn-counter' into one of type 'g-counter'"):
        GCounter().merge(PNCounter())
    with pytest.raises(TypeError, match="cannot merge a value of type 'or-set' into one of type 'lww-map'"):
        merge_json(LWWMap().to_json(), ORSet().to_json())
    with pytest.raises(TypeError, match="type 'dict'"):
        ORSet().merge(ORSet().to_json())
