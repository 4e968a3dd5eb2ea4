"""Two brokers against one, on one PostgreSQL store: round trips per second through the SDK
(clients ``arbiter.sdk.client.Client``, workers ``arbiter.sdk.worker.Worker`` connected to every
broker), and the time a client needs to fail over when the broker it talks to is SIGKILLed.

  one  a broker; worker processes connected to it; client processes on it;
  two  two brokers (``brokers`` in configs/broker.yaml); the same worker processes, each connected
       to both; half the clients list ``a`` first, half ``b``.

Both are measured side by side in one run, in short rounds whose order alternates, so a slow
spell of a shared machine favours neither; the table gives the median round and the ratio. Then
``KILLS`` times: a client calls through ``[a, b]`` one request after another, broker ``a`` is
SIGKILLed, and the time from the kill to the next reply is the failover (about the client's
per-attempt ``timeout``: Lazy Pirate waits that long before it sends the request to ``b``).
Numbers are printed, never asserted. Needs PostgreSQL on 127.0.0.1:5432 (trust, database test).

Run: python bench/bench_brokers.py [--quick] [--seconds S] [--rounds N] [--kills N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, table  # noqa: E402

THIS = Path(__file__).resolve()
HEARTBEAT_MS, LIVENESS = 500, 3
CLIENTS, WORKERS, CREDIT = 4, 2, 8
FAILOVER_TIMEOUT_S = 0.5  # the client's per-attempt timeout in the failover measurement
PG = "postgresql://postgres@127.0.0.1:5432"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BrokerProcess:
    """One broker on a project of its own, restartable on the same ports."""

    def __init__(self, root: Path, name: str, listed: list[dict[str, str]], url: str) -> None:
        self.entry = next(e for e in listed if e["name"] == name)
        self.frontend = self.entry["frontend"]
        self.root = root / name
        for folder in ("plugins", "rules", "configs"):
            shutil.copytree(ROOT / folder, self.root / folder)
        config = yaml.safe_load((self.root / "configs" / "broker.yaml").read_text())
        config.update(
            endpoints={k: self.entry[k] for k in ("frontend", "events_pub", "events_sub")},
            brokers=listed,
            deciders=0,
            state_keepers=0,
            heartbeat={"interval_ms": HEARTBEAT_MS, "liveness": LIVENESS},
            reload={"watch": False},
        )
        (self.root / "configs" / "broker.yaml").write_text(yaml.safe_dump(config))
        state = self.root / "configs" / "state.yaml"
        state.write_text(state.read_text().replace("sqlite:///.arbiter/state.db", url))
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [sys.executable, str(ROOT / "broker.py"), "--root", str(self.root), "--name", self.entry["name"]]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from arbiter.sdk.client import Client, RequestTimeout

        deadline = time.monotonic() + 60
        with Client(self.frontend, timeout=0.5, retries=0) as client:
            while time.monotonic() < deadline:
                try:
                    client.mmi("mmi.service")
                    return
                except RequestTimeout:
                    continue
        raise RuntimeError(f"broker {self.entry['name']} did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


def has_workers(frontend: str) -> bool:
    from arbiter.sdk.client import Client, RequestTimeout

    try:
        with Client(frontend, timeout=1, retries=0) as client:
            return client.has_service("echo")
    except RequestTimeout:
        return False


def wait_workers(frontends: list[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not all(has_workers(f) for f in frontends):
        if time.monotonic() > deadline:
            raise RuntimeError("the workers did not register")
        time.sleep(0.1)


def spawn(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(THIS), *args], stdout=subprocess.PIPE, text=True, env=env)


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def round_trips(lists: list[str], seconds: float) -> float:
    """Client processes (their broker lists given) calling for ``seconds``: replies per second."""
    clients = [spawn("--mode", "client", endpoints, str(seconds)) for endpoints in lists]
    counts = [int((c.communicate(timeout=seconds + 60)[0] or "0").split()[-1]) for c in clients]
    return sum(counts) / seconds


def failover_once(a: BrokerProcess, b: BrokerProcess) -> float:
    """Seconds from SIGKILL of ``a`` to the next reply of a client calling through ``[a, b]``."""
    from arbiter.sdk.client import Client

    replies: list[float] = []
    done = threading.Event()

    def call() -> None:
        with Client([a.frontend, b.frontend], timeout=FAILOVER_TIMEOUT_S, retries=4) as client:
            while not done.is_set():
                client.call("echo", "echo", {})
                replies.append(time.monotonic())

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    while len(replies) < 50:
        time.sleep(0.01)
    killed = time.monotonic()
    a.kill()
    while not [t for t in replies if t > killed] and time.monotonic() - killed < 30:
        time.sleep(0.005)
    done.set()
    thread.join(30)
    after = [t for t in replies if t > killed]
    return (after[0] - killed) if after else float("inf")


def database() -> Iterator[str]:
    import psycopg2

    name = f"arbiter_bench_{uuid.uuid4().hex[:8]}"
    con = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test", connect_timeout=3)
    con.autocommit = True
    con.cursor().execute(f"CREATE DATABASE {name}")
    try:
        yield f"{PG}/{name}"
    finally:
        con.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        con.close()


def measure(args: argparse.Namespace, url: str, tmp: Path) -> None:
    listed = [
        {"name": n, "frontend": f"tcp://127.0.0.1:{free_port()}", "events_pub": f"tcp://127.0.0.1:{free_port()}",
         "events_sub": f"tcp://127.0.0.1:{free_port()}"}
        for n in ("a", "b")
    ]  # fmt: skip
    a, b = BrokerProcess(tmp, "a", listed, url), BrokerProcess(tmp, "b", listed, url)
    both = f"{a.frontend},{b.frontend}"
    crossed = f"{b.frontend},{a.frontend}"
    workers: list[subprocess.Popen] = []
    try:
        a.start()
        b.start()
        workers = [spawn("--mode", "worker", both) for _ in range(WORKERS)]
        wait_workers([a.frontend, b.frontend])
        systems = {"one": [a.frontend] * CLIENTS, "two": [both, crossed] * (CLIENTS // 2)}
        rates: dict[str, list[float]] = {name: [] for name in systems}
        for n in range(args.rounds):
            for name in list(systems)[:: 1 if n % 2 == 0 else -1]:
                rates[name].append(round_trips(systems[name], args.seconds))
        one, two = statistics.median(rates["one"]), statistics.median(rates["two"])
        rows = [
            ["one broker", f"{one:,.0f}", "1.00"],
            ["two brokers", f"{two:,.0f}", f"{two / one:.2f}"],
        ]
        table(
            f"SDK round trips per second ({CLIENTS} client processes, {WORKERS} workers with credit {CREDIT}, "
            f"median of {args.rounds} rounds of {args.seconds:g}s)",
            ["system", "round trips/s", "ratio"],
            rows,
        )
        gaps = []
        for _ in range(args.kills):
            gaps.append(failover_once(a, b))
            a.start()
            wait_workers([a.frontend])
        table(
            f"Failover: SIGKILL of the client's broker to its next reply (client timeout {FAILOVER_TIMEOUT_S:g}s)",
            ["kills", "median s", "min s", "max s"],
            [[len(gaps), f"{statistics.median(gaps):.2f}", f"{min(gaps):.2f}", f"{max(gaps):.2f}"]],
        )
    finally:
        stop(workers)
        a.kill()
        b.kill()


# -- the peers --------------------------------------------------------------------------------------


def run_worker(endpoints: str) -> None:
    from arbiter.sdk.worker import Worker

    worker = Worker(endpoints, "echo", credit=CREDIT, heartbeat_interval=HEARTBEAT_MS / 1000, liveness=LIVENESS,
                    reconnect_max=0.5)  # fmt: skip
    worker.command("echo")(lambda parameters, envelope: parameters)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    worker.start()
    stopped.wait(600)
    worker.stop(timeout=5)


def run_client(endpoints: str, seconds: float) -> None:
    from arbiter.sdk.client import Client

    count = 0
    with Client(endpoints, timeout=5, retries=2) as client:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            client.call("echo", "echo", {})
            count += 1
    print(count, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["bench", "worker", "client"], default="bench")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--kills", type=int, default=5)
    args, rest = parser.parse_known_args()
    if args.mode == "worker":
        return run_worker(rest[0])
    if args.mode == "client":
        return run_client(rest[0], float(rest[1]))
    if args.quick:
        args.seconds, args.rounds, args.kills = 2.0, 2, 3
    tmp = Path(tempfile.mkdtemp(prefix="arbiter-bench-brokers-"))
    try:
        for url in database():
            measure(args, url, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
