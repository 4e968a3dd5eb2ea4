"""Shared state through the broker, next to a direct request through the same broker, measured side
by side in one run; and, outside the broker, what merging a replicated value costs.

Two brokers (the shipped configuration, ``deciders: 0``, their own ports and SQLite stores in a
temporary copy of the project), one with one state keeper and one with two. Each has one SDK
worker of a plugin that answers at once (credit 1, like a keeper, so a direct request and a state
operation take the same path: client, broker, a process behind it, broker, client) and four client
processes of its own. The main process is the client. Each round measures, in an order that
rotates so that a slow spell of the shared machine favours no one:

  direct          one request at a time to the plugin's worker: the floor;
  get ... merge   one ``arbiter.state`` operation at a time (``put`` unconditional, ``cas`` with
                  the right version each time, ``merge`` of a two-node PN-counter);
  lock + unlock   a lease taken and given back, one pair at a time;
  x4              four client processes at once, each with its own SharedState: direct requests,
                  ``incr`` on a key of its own, ``incr`` on one key they share (operations per
                  second, the wall time of the whole step);
  in process      the keeper's own handler for each operation, run in this process on a SQLite
                  store of its own: what an operation costs without any trip.

The ratio is an operation's p50 to the direct p50 of the same broker; "by round" is that ratio
in each round (min-max). Then the CRDT merges, with timeit (best of several repeats). Numbers
depend on the machine: printed, never asserted.

Run: python bench/bench_state.py [--quick] [--rounds N] [--ops N]
"""

from __future__ import annotations

import argparse
import select
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_broker import die_with_parent, free_port, make_project  # noqa: E402
from bench_chain import wait_ready  # noqa: E402
from common import ROOT, percentile, table  # noqa: E402

from arbiter.broker.keepers import Keeper  # noqa: E402
from arbiter.sdk.client import Client, ClientError  # noqa: E402
from arbiter.sdk.state import SharedState, StateError  # noqa: E402
from arbiter.sdk.worker import Worker  # noqa: E402
from arbiter.state.crdt import Crdt, LWWMap, PNCounter, from_json, merge_json  # noqa: E402
from arbiter.store import database as store  # noqa: E402
from arbiter.wire import envelope as env  # noqa: E402

THIS = Path(__file__).resolve()
PLUGIN = "jira-orchestrator"
COMMAND = "jira:work"
SOURCE = "bench"
SCOPE = "global"
RESOURCE = "bench-lock"
KEEPERS = (1, 2)
LOAD_CLIENTS = 4
STARTUP_S = 60.0
REPLY_S = 30.0
LOAD_S = 120.0  # one step of the four client processes never waits longer than this
LIFETIME_S = 900.0  # a client process that hears nothing for this long ends by itself
WARMUP = 20
LATENCY = ("direct", "get", "put", "cas", "incr", "merge", "lock + unlock")
STATE_OPS = LATENCY[1:]
LOADS = ("direct x4", "incr x4, own keys", "incr x4, one key")
TRIPS = {"lock + unlock": 2}  # calls per measured operation; every other one is a single call
PN_NODES = (2, 16, 128)
OR_SIZES = (10, 100, 1000)
LWW_KEYS = 100

Call = Callable[..., Any]  # call(op, **fields) -> the operation's result, StateError when refused


# --------------------------------------------------------------------------------------------
# Child processes: the plugin's worker, and the client processes of the concurrency steps.
# --------------------------------------------------------------------------------------------


def run_worker(endpoint: str) -> None:
    """The direct request's far end: answers at once, one request at a time like a keeper."""
    worker = Worker(endpoint, PLUGIN, credit=1)

    @worker.command(COMMAND)
    def answer(parameters: dict, envelope: dict) -> dict:
        return {"issueKey": parameters.get("issueKey", "PROJ-1")}

    print("ready", flush=True)
    worker.run()


def direct_body() -> dict:
    return env.new_request(PLUGIN, COMMAND, {"issueKey": "PROJ-7"}, source=SOURCE, timeout_ms=int(REPLY_S * 1000))


def direct(client: Client) -> None:
    reply = client.request(PLUGIN, direct_body())
    if not reply.ok:
        raise RuntimeError(f"direct request failed: {reply.error}")


def run_loader(endpoint: str) -> None:
    """One of the four clients: each stdin line ``WHAT KEY COUNT`` (``direct`` or ``incr``) is run
    and answered ``done`` or ``failed WHY``. Bounded: ends when stdin closes or stays silent."""
    client = Client(endpoint, timeout=REPLY_S, retries=0, source=SOURCE)
    state = SharedState(client, timeout=REPLY_S)
    print("ready", flush=True)
    try:
        while select.select([sys.stdin], [], [], LIFETIME_S)[0]:
            line = sys.stdin.readline()
            if not line:
                return
            print(load_step(client, state, *line.split()), flush=True)
    finally:
        client.close()


def load_step(client: Client, state: SharedState, what: str, key: str, count: str) -> str:
    try:
        for _ in range(int(count)):
            if what == "direct":
                direct(client)
            else:
                state.incr(SCOPE, key)
    except (ClientError, StateError, RuntimeError) as exc:
        return f"failed {exc}"
    return "done"


# --------------------------------------------------------------------------------------------
# The operations, the same requests through the broker and in process.
# --------------------------------------------------------------------------------------------


class Operations:
    """One call of each state operation over any ``call(op, **fields)``: SharedState.call through
    the broker, or the keeper's handler in this process, so both sides run the very same requests."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.counter = PNCounter().increment("peer", 3)
        call("put", scope=SCOPE, key="bench-get", value={"tag": "v1", "notes": "read back each time"})
        self.version = int(call("put", scope=SCOPE, key="bench-cas", value=0)["version"])

    def get(self, i: int) -> None:
        self.call("get", scope=SCOPE, key="bench-get")

    def put(self, i: int) -> None:
        self.call("put", scope=SCOPE, key="bench-put", value={"tag": "v2", "n": i})

    def cas(self, i: int) -> None:
        self.version = int(self.call("cas", scope=SCOPE, key="bench-cas", value=i, version=self.version)["version"])

    def incr(self, i: int) -> None:
        self.call("incr", scope=SCOPE, key="bench-incr", by=1)

    def merge(self, i: int) -> None:
        self.counter = self.counter.increment("bench")  # a new count each time: every merge changes it
        self.call("merge", scope=SCOPE, key="bench-merge", value=self.counter.to_json())

    def lock_pair(self, i: int) -> None:
        lease = self.call("lock", resource=RESOURCE, mode="write", ttlMs=30_000)
        if not self.call("unlock", resource=RESOURCE, token=lease["token"])["released"]:
            raise RuntimeError("a lease was not released")

    def by_name(self) -> dict[str, Callable[[int], None]]:
        return {
            "get": self.get,
            "put": self.put,
            "cas": self.cas,
            "incr": self.incr,
            "merge": self.merge,
            "lock + unlock": self.lock_pair,
        }


def keeper_call(root: Path) -> Call:
    """The keeper's handler on a store of its own under ``root``, fed the request the broker would
    hand it (op, caller and fields), its JSON answer read back: everything a keeper does but the trip."""
    store.open_store("sqlite:///.arbiter/state.db", root)
    keeper = Keeper()

    def call(op: str, **fields: Any) -> Any:
        answer = orjson.loads(keeper.serve([orjson.dumps({"op": op, "caller": SOURCE, **fields})])[0])
        if "error" in answer:
            raise StateError(answer["error"])
        return answer["result"]

    return call


def timed(operation: Callable[[int], None], count: int) -> list[float]:
    times = []
    for i in range(count):
        started = time.perf_counter()
        operation(i)
        times.append(time.perf_counter() - started)
    return times


# --------------------------------------------------------------------------------------------
# Processes: starting them, talking to the client processes, stopping everything.
# --------------------------------------------------------------------------------------------


@dataclass
class Children:
    """Every process this run started, so that all of them end whatever happened."""

    logs: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    def start(self, name: str, command: list[str]) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "wb") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=ROOT,
                preexec_fn=die_with_parent,
                bufsize=0,
            )
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            for pipe in (process.stdin, process.stdout):
                if pipe:
                    pipe.close()


def read_line(process: subprocess.Popen, deadline: float) -> str:
    """The child's next line, waited for until ``deadline`` at most."""
    assert process.stdout is not None
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not select.select([process.stdout], [], [], remaining)[0]:
        raise RuntimeError(f"process {process.pid} did not answer in time")
    line = process.stdout.readline().decode().strip()
    if not line:
        raise RuntimeError(f"process {process.pid} exited (exit code {process.poll()})")
    return line


@dataclass
class Loaders:
    """The four client processes of one broker, started once and told what to run each step."""

    processes: list[subprocess.Popen]

    def wait_ready(self, deadline: float) -> None:
        for process in self.processes:
            if read_line(process, deadline) != "ready":
                raise RuntimeError("a client process did not start")

    def rate(self, what: str, keys: Sequence[str], count: int) -> float:
        """``count`` operations by each process at once; all of them per second of wall time."""
        started = time.perf_counter()
        for process, key in zip(self.processes, keys):
            assert process.stdin is not None
            process.stdin.write(f"{what} {key} {count}\n".encode())
        deadline = time.monotonic() + LOAD_S
        answers = [read_line(process, deadline) for process in self.processes]
        elapsed = time.perf_counter() - started
        failed = [a for a in answers if a != "done"]
        if failed:
            raise RuntimeError(f"a client process failed: {failed[0]}")
        return len(self.processes) * count / elapsed


@dataclass
class Broker:
    """One broker with its worker, its four client processes, and this process's client."""

    keepers: int
    client: Client
    ops: Operations
    loaders: Loaders

    @property
    def label(self) -> str:
        return keepers_label(self.keepers)


def keepers_label(keepers: int) -> str:
    return f"{keepers} keeper" + ("s" if keepers > 1 else "")


def start_broker(children: Children, tmp: Path, keepers: int) -> Broker:
    urls = [f"tcp://127.0.0.1:{free_port()}" for _ in range(3)]
    endpoints = dict(zip(("frontend", "events_pub", "events_sub"), urls))
    project = make_project(tmp / f"project-{keepers}", endpoints, {"deciders": 0, "state_keepers": keepers})
    command = [sys.executable, str(ROOT / "broker.py"), "--root", str(project), "--frontend", urls[0]]
    children.start(f"broker-{keepers}", [*command, "--events-pub", urls[1], "--events-sub", urls[2]])
    children.start(f"worker-{keepers}", [sys.executable, str(THIS), "--mode", "worker", urls[0]])
    loaders = Loaders(
        [
            children.start(f"client-{keepers}-{n}", [sys.executable, str(THIS), "--mode", "loader", urls[0]])
            for n in range(LOAD_CLIENTS)
        ]
    )
    client = Client(urls[0], timeout=REPLY_S, retries=0, source=SOURCE)
    deadline = time.monotonic() + STARTUP_S
    wait_ready(client, deadline)
    loaders.wait_ready(deadline)
    state = SharedState(client, timeout=REPLY_S)
    return Broker(keepers, client, Operations(lambda op, **fields: state.call(op, **fields)), loaders)


# --------------------------------------------------------------------------------------------
# Measuring in rotating rounds.
# --------------------------------------------------------------------------------------------


@dataclass
class Measure:
    """One thing measured each round: latencies pooled over rounds, or one rate per round."""

    system: str
    name: str
    run: Callable[[int], list[float]]
    rate: bool = False
    samples: list[float] = field(default_factory=list)
    round_values: list[float] = field(default_factory=list)  # each round's p50, or its rate

    def record(self, values: list[float]) -> None:
        self.samples += values
        self.round_values.append(values[0] if self.rate else statistics.median(values))

    @property
    def p50(self) -> float:
        return statistics.median(self.samples)


def latency(system: str, name: str, operation: Callable[[int], None]) -> Measure:
    return Measure(system, name, lambda count: timed(operation, count))


def broker_measures(broker: Broker) -> list[Measure]:
    operations = {"direct": lambda i: direct(broker.client), **broker.ops.by_name()}
    measures = [latency(broker.label, name, operations[name]) for name in LATENCY]
    shared = ["load-shared"] * LOAD_CLIENTS
    own = [f"load-{n}" for n in range(LOAD_CLIENTS)]
    steps = {LOADS[0]: ("direct", own), LOADS[1]: ("incr", own), LOADS[2]: ("incr", shared)}
    for name, (what, keys) in steps.items():
        measures.append(Measure(broker.label, name, load(broker.loaders, what, keys), rate=True))
    return measures


def load(loaders: Loaders, what: str, keys: list[str]) -> Callable[[int], list[float]]:
    return lambda count: [loaders.rate(what, keys, count)]


def rotate(measures: list[Measure], index: int, rounds: int) -> list[Measure]:
    """This round's order: every round starts at a different place, spread over the list."""
    shift = index * len(measures) // max(rounds, 1)
    return measures[shift:] + measures[:shift]


def run_rounds(measures: list[Measure], args: argparse.Namespace) -> None:
    for measure in measures:  # warm-up: connections, caches, the first rows of every table
        measure.run(WARMUP // 2 if measure.rate else WARMUP)
    for index in range(args.rounds):
        for measure in rotate(measures, index, args.rounds):
            measure.record(measure.run(args.ops))
        print(f"  round {index + 1}/{args.rounds} done", file=sys.stderr, flush=True)


def measure_brokers(args: argparse.Namespace) -> list[Measure]:
    with tempfile.TemporaryDirectory(prefix="arbiter-bench-state-") as name:
        tmp = Path(name)
        children = Children(tmp)
        brokers: list[Broker] = []
        try:
            brokers = [start_broker(children, tmp, keepers) for keepers in KEEPERS]
            measures = [m for broker in brokers for m in broker_measures(broker)]
            in_process = Operations(keeper_call(tmp / "in-process")).by_name()
            measures += [latency("in process", op, in_process[op]) for op in STATE_OPS]
            run_rounds(measures, args)
            return measures
        except Exception:
            show_logs(tmp)
            raise
        finally:
            for broker in brokers:
                broker.client.close()
            children.stop()
            store.close_store()


def show_logs(tmp: Path) -> None:
    """The end of every child's log, so that a failure says what the broker or a client saw."""
    for log in sorted(tmp.glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()[-5:]
        if lines:
            print(f"--- {log.name}", *lines, sep="\n", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# CRDT merges outside the broker.
# --------------------------------------------------------------------------------------------


def pn_counters(nodes: int) -> tuple[Crdt, Crdt]:
    """Two replicas that each saw other counts on every node: a merge compares every node."""
    a, b = PNCounter(), PNCounter()
    for n in range(nodes):
        node = f"node-{n}"
        a = a.increment(node, n + 1).decrement(node, 1)
        b = b.increment(node, n + 2).decrement(node, 2)
    return a, b


def or_sets(size: int) -> tuple[Crdt, Crdt]:
    """Two replicas holding every element, each under its own add; one has removed a tenth of the
    other's adds (tombstones), so a merge unions tags and drops the removed ones."""

    def replica(node: str, tombstones: list[list[Any]]) -> Crdt:
        entries = [{"element": f"item-{i}", "tags": [[node, i + 1]]} for i in range(size)]
        return from_json({"type": "or-set", "entries": entries, "tombstones": tombstones})

    return replica("a", []), replica("b", [["a", i + 1] for i in range(0, size, 10)])


def lww_maps(keys: int) -> tuple[Crdt, Crdt]:
    """Two replicas with the same keys, each newer on every other key."""
    a, b = LWWMap(), LWWMap()
    for i in range(keys):
        key, stamp = f"key-{i}", 1_000 + 2 * i
        a = a.set("a", key, {"n": i}, timestamp=stamp + i % 2)
        b = b.set("b", key, {"n": -i}, timestamp=stamp + 1 - i % 2)
    return a, b


def best_us(call: Callable[[], object], repeats: int) -> float:
    """Microseconds per call: the best of ``repeats`` timings, each long enough to read (timeit)."""
    timer = timeit.Timer(call)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=repeats, number=number)) / number * 1e6


def crdt_rows(repeats: int) -> list[list[str]]:
    fixtures = [("PN-counter", f"{n} nodes", pn_counters(n)) for n in PN_NODES]
    fixtures += [("OR-set", f"{n:,} elements", or_sets(n)) for n in OR_SIZES]
    fixtures += [("LWW-map", f"{LWW_KEYS} keys", lww_maps(LWW_KEYS))]
    return [[kind, size, *merge_costs(a, b, repeats)] for kind, size, (a, b) in fixtures]


def merge_costs(a: Crdt, b: Crdt, repeats: int) -> list[str]:
    """The merge of two values, and the same merge from and to JSON, as a keeper does it."""
    a_json, b_json = a.to_json(), b.to_json()
    merged = best_us(lambda: a.merge(b), repeats)
    keeper = best_us(lambda: merge_json(a_json, b_json), repeats)
    return [f"{merged:,.1f}", f"{keeper:,.1f}"]


# --------------------------------------------------------------------------------------------
# Tables.
# --------------------------------------------------------------------------------------------


def by_key(measures: list[Measure]) -> dict[tuple[str, str], Measure]:
    return {(m.system, m.name): m for m in measures}


def ratio_range(op: Measure, floor: Measure, trips: int) -> str:
    ratios = [o / trips / d for o, d in zip(op.round_values, floor.round_values)]
    return f"{min(ratios):.2f}x-{max(ratios):.2f}x"


def latency_rows(found: dict[tuple[str, str], Measure], system: str) -> list[list[str]]:
    floor = found[(system, "direct")]
    rows = []
    for name in LATENCY:
        m, trips = found[(system, name)], TRIPS.get(name, 1)
        label = "direct request (the floor)" if name == "direct" else name
        label += ", a pair (ratio per call)" if trips > 1 else ""
        ratio = m.p50 / trips / floor.p50
        row = [label, f"{m.p50 * 1e3:.2f}", f"{percentile(m.samples, 0.99) * 1e3:.2f}", f"{1 / m.p50:,.0f}"]
        rows.append(row + [f"{ratio:.2f}x", ratio_range(m, floor, trips)])
    return rows


def load_rows(found: dict[tuple[str, str], Measure], systems: list[str]) -> list[list[str]]:
    rows = [["incr, one client at a time (1 / p50)"] + [f"{1 / found[(s, 'incr')].p50:,.0f}" for s in systems]]
    for name in LOADS:
        cells = []
        for system in systems:
            rate = found[(system, name)].round_values
            cells.append(f"{statistics.median(rate):,.0f} ({min(rate):,.0f}-{max(rate):,.0f})")
        rows.append([name, *cells])
    return rows


def keeper_rows(found: dict[tuple[str, str], Measure], system: str) -> list[list[str]]:
    floor = found[(system, "direct")].p50
    rows = []
    for name in STATE_OPS:
        inside, through, trips = found[("in process", name)], found[(system, name)], TRIPS.get(name, 1)
        extra = through.p50 - trips * floor
        rows.append(
            [
                name,
                f"{inside.p50 * 1e3:.3f}",
                f"{percentile(inside.samples, 0.99) * 1e3:.3f}",
                f"{through.p50 * 1e3:.2f}",
                f"{extra * 1e3:.2f}",
                f"{inside.p50 / extra:.0%}" if extra > 0 else "-",
            ]
        )
    return rows


def report(measures: list[Measure], crdt: list[list[str]], args: argparse.Namespace) -> None:
    found = by_key(measures)
    systems = [keepers_label(k) for k in KEEPERS]
    for system in systems:
        table(
            f"One at a time through the broker, {system} ({args.rounds} rounds, {args.ops} operations each)",
            ["measure", "p50 ms", "p99 ms", "per second", "p50 / direct p50", "by round (min-max)"],
            latency_rows(found, system),
        )
    table(
        f"{LOAD_CLIENTS} client processes at once, operations per second (median of rounds, min-max)",
        ["measure", *systems],
        load_rows(found, systems),
    )
    table(
        f"The keeper's own work, in process (its handler on a SQLite store), next to the broker ({systems[0]})",
        ["operation", "in process p50 ms", "p99 ms", "broker p50 ms", "broker - direct ms", "in process / that"],
        keeper_rows(found, systems[0]),
    )
    table(
        f"CRDT merges outside the broker, µs per merge (timeit, best of {args.repeats})",
        ["type", "size", "merge", "merge_json (parse, merge, serialise)"],
        crdt,
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 30 operations, 3 timeit repeats")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--ops", type=int, default=200, help="operations per measure per round (per client at x4)")
    parser.add_argument("--mode", nargs="+", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args(argv)
    args.repeats = 5
    if args.quick:
        args.rounds, args.ops, args.repeats = 2, 30, 3
    return args


def main() -> None:
    args = parse_args(sys.argv[1:])
    if args.mode:
        {"worker": run_worker, "loader": run_loader}[args.mode[0]](args.mode[1])
        return
    measures = measure_brokers(args)
    report(measures, crdt_rows(args.repeats), args)


if __name__ == "__main__":
    main()
