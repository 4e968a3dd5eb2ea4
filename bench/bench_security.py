"""What security costs: the same broker with and without configs/security.yaml, side by side in
one run (rotating rounds), for a direct request to a plugin's worker and a routed request
(``arbiter.route``, decision cached), one at a time and with a window of requests in flight.

With security on, every byte is CURVE-encrypted both ways, and every message is checked against
the sender's permissions (the ZAP User-Id read with the message). Numbers depend on the machine:
printed, never asserted; compare the ratios.

Run: python bench/bench_security.py [--quick] [--rounds N] [--requests N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq
import zmq.auth

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_broker import free_port, make_project  # noqa: E402
from bench_chain import PLUGIN, THIS, start, wait_ready  # noqa: E402
from common import ROOT, percentile, table  # noqa: E402

from arbiter.sdk.client import Client  # noqa: E402
from arbiter.sdk.curve import CurveKeys, connect  # noqa: E402
from arbiter.wire import envelope as env  # noqa: E402
from arbiter.wire.mdp import MDPC01  # noqa: E402

STARTUP_S = 60.0
WINDOW = 50
SECURITY = f"""
curve:
  secret_key_file: keys/broker.key_secret
identities:
  bench-worker:
    public_key_file: keys/bench-worker.key
    serve: {{allow: [{PLUGIN}]}}
  bench-client:
    public_key_file: keys/bench-client.key
    call: {{allow: ["**"]}}
"""
ROUTED = "start work on PROJ-42 in jira, the login bug"


def direct_body() -> bytes:
    return env.encode(env.new_request(PLUGIN, "jira:work", {"issueKey": "PROJ-7"}, source="bench", timeout_ms=30_000))


def routed_body() -> bytes:
    request = env.new_request("arbiter.route", "", source="bench", timeout_ms=30_000)
    request["payload"] = {"text": ROUTED, "command": "jira:work", "parameters": {"issueKey": "PROJ-7"}}
    return env.encode(request)


class Target:
    """One broker (plain or secure), its worker, and a client socket of its own."""

    def __init__(self, tmp: Path, secure: bool):
        self.secure = secure
        self.urls = [f"tcp://127.0.0.1:{free_port()}" for _ in range(3)]
        self.root = make_project(
            tmp / ("secure" if secure else "plain"),
            dict(zip(("frontend", "events_pub", "events_sub"), self.urls)),
            {"deciders": 0, "state_keepers": 0},
        )
        self.curve: CurveKeys | None = None
        worker_env: dict[str, str] = {}
        if secure:
            keys = self.root / "keys"
            keys.mkdir()
            for name in ("broker", "bench-worker", "bench-client"):
                zmq.auth.create_certificates(keys, name)
            (self.root / "configs" / "security.yaml").write_text(SECURITY)
            self.curve = CurveKeys.from_files(keys / "bench-client.key_secret", keys / "broker.key")
            worker_env = {"ARBITER_CURVE_KEY": str(keys / "bench-worker.key_secret"),
                          "ARBITER_BROKER_KEY": str(keys / "broker.key")}  # fmt: skip
        broker = [sys.executable, str(ROOT / "broker.py"), "--root", str(self.root)]
        self.processes = [start(broker, tmp / f"broker-{secure}.log")]
        worker = [sys.executable, str(THIS), "--mode", "worker", self.urls[0]]
        self.processes.append(start(worker, tmp / f"worker-{secure}.log", worker_env))
        self.socket = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        connect(self.socket, self.urls[0], self.curve)
        with Client(self.urls[0], timeout=5, retries=0, curve=self.curve) as client:
            wait_ready(client, time.monotonic() + STARTUP_S)

    def sync(self, service: bytes, body: bytes, count: int) -> list[float]:
        times = []
        for _ in range(count):
            started = time.perf_counter()
            self.socket.send_multipart([b"", MDPC01, service, body])
            if not self.socket.poll(30_000):
                raise RuntimeError("no reply")
            self.socket.recv_multipart()
            times.append(time.perf_counter() - started)
        return times

    def windowed(self, service: bytes, body: bytes, count: int) -> float:
        sent = done = 0
        started = time.perf_counter()
        while done < count:
            while sent < count and sent - done < WINDOW:
                self.socket.send_multipart([b"", MDPC01, service, body])
                sent += 1
            if not self.socket.poll(30_000):
                raise RuntimeError("no reply")
            self.socket.recv_multipart()
            done += 1
        return count / (time.perf_counter() - started)

    def close(self) -> None:
        self.socket.close()
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


CASES = (("direct", PLUGIN.encode(), direct_body), ("routed", b"arbiter.route", routed_body))


def measure(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="arbiter-bench-security-") as tmp:
        targets = [Target(Path(tmp), secure=False), Target(Path(tmp), secure=True)]
        try:
            for target in targets:  # warm-up: handshakes, the decision cache
                for _, service, body in CASES:
                    target.sync(service, body(), 50)
            report(targets, args)
        finally:
            for target in targets:
                target.close()


def report(targets: list[Target], args: argparse.Namespace) -> None:
    sync: dict[tuple[str, bool], list[float]] = {}
    rates: dict[tuple[str, bool], list[float]] = {}
    for index in range(args.rounds):
        for target in targets[index % 2 :] + targets[: index % 2]:
            for name, service, body in CASES:
                sync.setdefault((name, target.secure), []).extend(target.sync(service, body(), args.requests // 10))
                rates.setdefault((name, target.secure), []).append(target.windowed(service, body(), args.requests))
    rows = []
    for name, _, _ in CASES:
        plain, secure = sync[(name, False)], sync[(name, True)]
        p50 = (statistics.median(plain) * 1e6, statistics.median(secure) * 1e6)
        rate = (statistics.median(rates[(name, False)]), statistics.median(rates[(name, True)]))
        rows.append([name, f"{p50[0]:.0f}", f"{p50[1]:.0f}", f"{p50[1] / p50[0]:.2f}x",
                     f"{percentile(secure, 0.99) * 1e6:.0f}", f"{rate[0]:,.0f}", f"{rate[1]:,.0f}",
                     f"{rate[1] / rate[0]:.2f}x"])  # fmt: skip
    table(
        f"Security off and on, side by side ({args.rounds} rounds; window {WINDOW})",
        ["request", "p50 µs off", "p50 µs on", "p50 on/off", "p99 µs on", "req/s off", "req/s on", "req/s on/off"],
        rows,
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 1,000 requests")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=4000, help="windowed requests per case and round")
    args, _ = parser.parse_known_args(argv)
    if args.quick:
        args.rounds, args.requests = 3, 1000
    return args


if __name__ == "__main__":
    measure(parse_args(sys.argv[1:]))
