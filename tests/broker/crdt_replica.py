"""A replica process for the CRDT convergence test (holds no tests): keeps a PN-counter and an
OR-set in step with its peers through the broker, makes STEPS local changes to both, then
writes both states to OUT/<node>.json whenever they change, until OUT/stop appears or the
deadline passes.

    python crdt_replica.py EVENTS_PUB EVENTS_SUB NODE OUT [--steps 200] [--sync 0.2] [--deadline 60]

The plan per step j (tests/broker/test_crdt_replicas.py derives the expected values from it):
the counter goes up by 2, or down by 3 when j % 5 == 4; the set gains "<node>/<j>", and when
j % 4 == 3 loses "<node>/<j-2>". The shared elements "shared/<k>" are added by every node at
step 0, removed at the middle step and added again at the last one.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from arbiter.sdk.replica import Replica
from arbiter.state.crdt import ORSet, PNCounter

SHARED = [f"shared/{k}" for k in range(3)]


def change(counter: Replica[PNCounter], items: Replica[ORSet], node: str, j: int, steps: int) -> None:
    if j % 5 == 4:
        counter.update(lambda c: c.decrement(node, 3))
    else:
        counter.update(lambda c: c.increment(node, 2))
    items.update(lambda s: s.add(node, f"{node}/{j}"))
    if j % 4 == 3:
        items.update(lambda s: s.remove(f"{node}/{j - 2}"))
    for element in SHARED:
        if j in (0, steps - 1):
            items.update(lambda s, e=element: s.add(node, e))
        elif j == steps // 2:
            items.update(lambda s, e=element: s.remove(e))


def report(out: Path, node: str, counter: Replica[PNCounter], items: Replica[ORSet], last: str) -> str:
    """Write both states when they changed since ``last``; atomically, so a reader never sees half a file."""
    text = json.dumps({"counter": counter.value.to_json(), "items": items.value.to_json()}, sort_keys=True)
    if text != last:
        partial = out / f".{node}.json"
        partial.write_text(text)
        os.replace(partial, out / f"{node}.json")
    return text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("events_pub")
    parser.add_argument("events_sub")
    parser.add_argument("node")
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--sync", type=float, default=0.2)
    parser.add_argument("--deadline", type=float, default=60.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.deadline
    options = {"events_pub": args.events_pub, "events_sub": args.events_sub, "node_id": args.node}
    with (
        Replica("test-counter", PNCounter(), sync_interval=args.sync, **options) as counter,
        Replica("test-items", ORSet(), sync_interval=args.sync, **options) as items,
    ):
        for j in range(args.steps):
            change(counter, items, args.node, j, args.steps)
            time.sleep(0.002)  # spread the changes out, so they interleave with the peers'
        last = ""
        while time.monotonic() < deadline and not (args.out / "stop").exists():
            last = report(args.out, args.node, counter, items, last)
            time.sleep(0.05)


if __name__ == "__main__":
    main()
