"""Chains through the broker: a 5-step sequential chain run end to end (``arbiter.chain``), in runs
per second, and what running a step as part of a chain costs next to one direct request to the
same plugin's worker through the same broker.

One broker (the shipped configuration, its own ports, a chain of five ``jira-orchestrator`` steps
added to its rules, each step reading an earlier step's result) and two SDK worker processes
answering at once. The main process is the client. Each round measures, side by side and in a
rotating order:

  direct     one request at a time to the plugin's service (the SDK client): the floor;
  chain      one run at a time, waited for: its time / 5 is the time per step;
  chain x8   eight runs in flight at once (runs per second under concurrency).

"overhead per step" is (run time / 5) - direct time, and the ratio is (run time / 5) / direct
time: what the runner, storing every step's state (the recorder process writes each change),
the events and the references between steps add to a bare request. Numbers depend on the
machine: printed, never asserted.

Run: python bench/bench_chain.py [--quick] [--rounds N] [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_broker import die_with_parent, free_port, make_project  # noqa: E402
from common import ROOT, percentile, table  # noqa: E402

from arbiter.sdk.client import Client, RequestTimeout  # noqa: E402
from arbiter.sdk.worker import Worker  # noqa: E402
from arbiter.wire import envelope as env  # noqa: E402
from arbiter.wire.mdp import MDPC01  # noqa: E402

THIS = Path(__file__).resolve()
PLUGIN = "jira-orchestrator"
CHAIN = "bench-five"
STEPS = 5
CONCURRENT = 8
STARTUP_S = 60.0
REPLY_S = 30.0
CHAIN_RULES = f"""
# Five steps, each reading what an earlier one answered: what the chain benchmark runs.
chain {CHAIN} sequential (issueKey: string) {{
  step prepare: {PLUGIN} jira:prepare with issueKey = $issueKey
  step work: {PLUGIN} jira:work with issueKey = prepare.issueKey
  step pr: {PLUGIN} jira:pr with issueKey = work.issueKey
  step docs: {PLUGIN} jira:docs with prUrl = pr.pullRequestUrl
  step close: {PLUGIN} jira:work with issueKey = prepare.issueKey
}}
"""


def run_worker(endpoint: str) -> None:
    """A worker of the plugin that answers every command at once with what the chain reads."""
    worker = Worker(endpoint, PLUGIN, credit=16)

    def answer(parameters: dict, envelope: dict) -> dict:
        key = parameters.get("issueKey", "PROJ-1")
        return {"issueKey": key, "pullRequestUrl": f"https://git.example.com/{key}"}

    for name in ("jira:prepare", "jira:work", "jira:pr", "jira:docs"):
        worker.command(name)(answer)
    print("ready", flush=True)
    worker.run()


def direct_body() -> dict:
    return env.new_request(PLUGIN, "jira:work", {"issueKey": "PROJ-7"}, source="bench", timeout_ms=30_000)


def chain_body() -> dict:
    request = env.new_request("arbiter.chain", "", source="bench", timeout_ms=30_000)
    request["payload"] = {"chain": CHAIN, "params": {"issueKey": "PROJ-7"}}
    return request


def timed_direct(client: Client, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        reply = client.request(PLUGIN, direct_body())
        times.append(time.perf_counter() - started)
        if not reply.ok:
            raise RuntimeError(f"direct request failed: {reply.error}")
    return times


def timed_chain(client: Client, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        reply = client.request("arbiter.chain", chain_body())
        times.append(time.perf_counter() - started)
        if not reply.ok or reply.result["status"] != "completed":
            raise RuntimeError(f"chain run failed: {reply.error or reply.result}")
    return times


def concurrent_chains(endpoint: str, count: int) -> float:
    """``count`` runs with ``CONCURRENT`` in flight at once; returns runs per second."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sent = done = 0
        started = time.perf_counter()
        while done < count:
            while sent < count and sent - done < CONCURRENT:
                sock.send_multipart([b"", MDPC01, b"arbiter.chain", env.encode(chain_body())])
                sent += 1
            if not sock.poll(int(REPLY_S * 1000)):
                raise RuntimeError("a chain run did not answer")
            reply = orjson.loads(sock.recv_multipart()[3])
            if reply["payload"]["status"] != "success" or reply["payload"]["result"]["status"] != "completed":
                raise RuntimeError(f"chain run failed: {reply['payload']}")
            done += 1
        return count / (time.perf_counter() - started)
    finally:
        sock.close()


def start(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A child process that dies with us; ``env``: what it gets beyond our environment."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=out,
            cwd=ROOT,
            preexec_fn=die_with_parent,
            bufsize=0,
            env={**os.environ, **env} if env else None,
        )


def wait_ready(client: Client, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            if client.mmi(PLUGIN, timeout=1) == "200":
                return
        except RequestTimeout:  # the broker is still reading the project
            pass
        time.sleep(0.1)
    raise RuntimeError(f"no worker of {PLUGIN} registered")


def measure(args: argparse.Namespace) -> None:
    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="arbiter-bench-chain-") as tmp:
        urls = [f"tcp://127.0.0.1:{free_port()}" for _ in range(3)]
        project = make_project(
            Path(tmp) / "project", dict(zip(("frontend", "events_pub", "events_sub"), urls)), {"deciders": 0}
        )
        (project / "rules" / "bench.arb").write_text(CHAIN_RULES)
        try:
            broker = [sys.executable, str(ROOT / "broker.py"), "--root", str(project), "--frontend", urls[0]]
            processes.append(start([*broker, "--events-pub", urls[1], "--events-sub", urls[2]], Path(tmp) / "b.log"))
            for n in range(2):
                processes.append(
                    start([sys.executable, str(THIS), "--mode", "worker", urls[0]], Path(tmp) / f"w{n}.log")
                )
            with Client(urls[0], timeout=REPLY_S, retries=0) as client:
                wait_ready(client, time.monotonic() + STARTUP_S)
                timed_direct(client, 50)  # warm-up: connections, caches, the first runs' stores
                timed_chain(client, 10)
                report(client, urls[0], args)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
            for process in processes:
                if process.stdout:
                    process.stdout.close()


def report(client: Client, endpoint: str, args: argparse.Namespace) -> None:
    direct: list[float] = []
    chains: list[float] = []
    rates: list[float] = []
    rounds_p50: list[tuple[float, float]] = []
    for index in range(args.rounds):
        order = ["direct", "chain", "concurrent"]
        order = order[index % 3 :] + order[: index % 3]
        got_direct: list[float] = []
        got_chain: list[float] = []
        for what in order:
            if what == "direct":
                got_direct = timed_direct(client, args.runs * STEPS)
            elif what == "chain":
                got_chain = timed_chain(client, args.runs)
            else:
                rates.append(concurrent_chains(endpoint, args.runs * 2))
        direct += got_direct
        chains += got_chain
        rounds_p50.append((statistics.median(got_direct), statistics.median(got_chain)))
    per_step = statistics.median(chains) / STEPS
    floor = statistics.median(direct)
    ratios = [c / STEPS / d for d, c in rounds_p50]
    ms = 1000.0
    table(
        f"A {STEPS}-step sequential chain through the broker ({args.rounds} rounds, {args.runs} runs each)",
        ["measure", "p50 ms", "p99 ms", "per second"],
        [
            [
                "direct request (one at a time)",
                f"{floor * ms:.2f}",
                f"{percentile(direct, 0.99) * ms:.2f}",
                f"{1 / floor:,.0f}",
            ],
            [
                "chain run (one at a time)",
                f"{statistics.median(chains) * ms:.2f}",
                f"{percentile(chains, 0.99) * ms:.2f}",
                f"{1 / statistics.median(chains):,.0f}",
            ],
            [f"chain runs, {CONCURRENT} in flight", "", "", f"{statistics.median(rates):,.0f}"],
        ],
    )
    table(
        "What a chain adds per step (run p50 / 5 against the direct p50)",
        ["per step ms", "direct ms", "overhead ms", "ratio", "ratio by round (min-max)"],
        [
            [
                f"{per_step * ms:.2f}",
                f"{floor * ms:.2f}",
                f"{(per_step - floor) * ms:.2f}",
                f"{per_step / floor:.2f}x",
                f"{min(ratios):.2f}x-{max(ratios):.2f}x",
            ]
        ],
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 20 runs")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--runs", type=int, default=60, help="sequential runs per round")
    parser.add_argument("--mode", nargs="+", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args(argv)
    if args.quick:
        args.rounds, args.runs = 3, 20
    return args


def main() -> None:
    args = parse_args(sys.argv[1:])
    if args.mode:
        run_worker(args.mode[1])
        return
    measure(args)


if __name__ == "__main__":
    main()
