"""Routing speed: decisions per second and p50/p99 per decision over the corpus, with and without
rules and on both engines; how latency grows with plugins (5 -> 34), rules (10 -> 1,000) and the
length of the request (100 -> 1M characters, with routing's `max_text_chars` and without it); and
the wall time of a cold `arbiter explain`.

Run: python bench/bench_routing.py
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CASES, CORPUS, ROOT, percentile, table  # noqa: E402

from arbiter.project.snapshot import build_snapshot  # noqa: E402
from arbiter.routing.engine.engines import durable_available  # noqa: E402
from arbiter.routing.pipeline import (
    Request,
    Router,  # noqa: E402
)

REQUESTS = [c["text"] for c in yaml.safe_load((CASES / "corpus_cases.yaml").read_text())]
ROUNDS = 3
LENGTHS = (100, 1_000, 10_000, 100_000, 1_000_000)
LENGTH_RUNS = 21  # decisions per length with the cut; fewer without it, where 1M characters take long


def measure(router: Router) -> tuple[float, float, float]:
    latencies = []
    for _ in range(ROUNDS):
        for text in REQUESTS:
            start = time.perf_counter()
            router.route(Request(text))
            latencies.append(time.perf_counter() - start)
    total = sum(latencies)
    return len(latencies) / total, percentile(latencies, 0.5) * 1e6, percentile(latencies, 0.99) * 1e6


def long_request(chars: int) -> str:
    """A request of ``chars`` characters: one corpus request, then pasted material (the other
    requests, over and over), as when someone pastes a log or a file after the question."""
    body = "\n".join(REQUESTS)
    text = REQUESTS[0] + "\n\n" + body * (chars // len(body) + 1)
    return text[:chars]


def p50_us(router: Router, text: str, runs: int) -> float:
    latencies = []
    for _ in range(runs):
        start = time.perf_counter()
        router.route(Request(text))
        latencies.append(time.perf_counter() - start)
    return percentile(latencies, 0.5) * 1e6


def length_table(router: Router) -> None:
    """p50 per decision by request length: as configured (routing reads ``max_text_chars``) and
    with the limit lifted, which is how routing scaled before it had one."""
    limit = router.max_text_chars
    rows = []
    for chars in LENGTHS:
        text = long_request(chars)
        router.max_text_chars = limit
        read = len(router.route(Request(text)).classification.text)
        bounded = p50_us(router, text, LENGTH_RUNS)
        router.max_text_chars = len(text)
        whole = p50_us(router, text, max(3, min(LENGTH_RUNS, 200_000 // chars)))
        rows.append([f"{chars:,}", f"{read:,}", f"{bounded:,.0f}", f"{whole:,.0f}"])
    router.max_text_chars = limit
    table(
        f"p50 decision time by request length (34 plugins, python engine, no rules; max_text_chars {limit:,})",
        ["request chars", "read chars", "p50 us (cut)", "p50 us (whole text)"],
        rows,
    )


def rules_project(tmp: Path, n: int) -> Path:
    project = tmp / f"rules{n}"
    (project / "rules").mkdir(parents=True, exist_ok=True)
    rng = random.Random(n)
    words = ["helm", "keycloak", "sprint", "zigbee", "pdf", "react", "terraform", "mongodb", "power bi", "ocr"]
    plugins = sorted(p.name for p in CORPUS.iterdir() if (p / ".claude-plugin").is_dir())
    rules = [
        f"rule g{i} {{\n  priority {rng.randint(0, 50)}\n"
        f'  when text contains "{rng.choice(words)}" and urgency >= {rng.randint(1, 9)}\n'
        f"  then prefer {rng.choice(plugins)} by {rng.randint(1, 10)}\n}}\n"
        for i in range(n)
    ]
    (project / "rules" / "gen.arb").write_text("\n".join(rules))
    return project


def main() -> None:
    engines = ["python"] + (["durable"] if durable_available() else [])
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        empty = tmp_path / "empty"
        empty.mkdir()
        rows = []
        for engine in engines:
            for label, project in (("no rules", empty), ("100 rules", rules_project(tmp_path, 100))):
                router = Router(build_snapshot(project, [CORPUS]), engine=engine)
                rate, p50, p99 = measure(router)
                rows.append([engine, label, f"{rate:,.0f}", f"{p50:.0f}", f"{p99:.0f}"])
        table(
            f"Decisions over the 34 corpus plugins ({len(REQUESTS)} requests x {ROUNDS})",
            ["engine", "rules", "decisions/s", "p50 us", "p99 us"],
            rows,
        )

        plugin_dirs = sorted(p for p in CORPUS.iterdir() if (p / ".claude-plugin").is_dir())
        rows = []
        for count in (5, 10, 20, 34):
            router = Router(build_snapshot(empty, plugin_dirs[:count]), engine="python")
            rate, p50, p99 = measure(router)
            rows.append([count, f"{rate:,.0f}", f"{p50:.0f}", f"{p99:.0f}"])
        table(
            "Latency by number of plugins (python engine, no rules)",
            ["plugins", "decisions/s", "p50 us", "p99 us"],
            rows,
        )

        length_table(Router(build_snapshot(empty, [CORPUS]), engine="python"))

        rows = []
        for n in (10, 100, 1000):
            project = rules_project(tmp_path, n)
            for engine in engines:
                router = Router(build_snapshot(project, [CORPUS]), engine=engine)
                rate, p50, p99 = measure(router)
                rows.append([n, engine, f"{rate:,.0f}", f"{p50:.0f}", f"{p99:.0f}"])
        table("Latency by number of rules (34 plugins)", ["rules", "engine", "decisions/s", "p50 us", "p99 us"], rows)

    arbiter = str(Path(sys.executable).with_name("arbiter"))
    text = "Build a FastAPI endpoint with MongoDB and Keycloak auth"
    commands = {
        "arbiter --version": [arbiter, "--version"],
        "arbiter explain TEXT": [arbiter, "--root", str(ROOT), "explain", text, "--no-record"],
    }
    rows = []
    for label, command in commands.items():
        walls = []
        for _ in range(7):
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            walls.append(time.perf_counter() - start)
        rows.append([label, len(walls), f"{percentile(walls, 0.5):.3f}", f"{min(walls):.3f}"])
    headers = ["command", "runs", "median s", "min s"]
    table("Cold commands on the shipped project (a new process each time)", headers, rows)


if __name__ == "__main__":
    main()
