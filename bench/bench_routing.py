"""Routing speed: decisions per second and p50/p99 per decision over the corpus, with and without
rules and on both engines; how latency grows with plugins (5 -> 34) and rules (10 -> 1,000); and
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


def measure(router: Router) -> tuple[float, float, float]:
    latencies = []
    for _ in range(ROUNDS):
        for text in REQUESTS:
            start = time.perf_counter()
            router.route(Request(text))
            latencies.append(time.perf_counter() - start)
    total = sum(latencies)
    return len(latencies) / total, percentile(latencies, 0.5) * 1e6, percentile(latencies, 0.99) * 1e6


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

        rows = []
        for n in (10, 100, 1000):
            project = rules_project(tmp_path, n)
            for engine in engines:
                router = Router(build_snapshot(project, [CORPUS]), engine=engine)
                rate, p50, p99 = measure(router)
                rows.append([n, engine, f"{rate:,.0f}", f"{p50:.0f}", f"{p99:.0f}"])
        table("Latency by number of rules (34 plugins)", ["rules", "engine", "decisions/s", "p50 us", "p99 us"], rows)

    arbiter = Path(sys.executable).with_name("arbiter")
    command = [
        str(arbiter),
        "--root",
        str(ROOT),
        "explain",
        "Build a FastAPI endpoint with MongoDB and Keycloak auth",
        "--no-record",
    ]
    walls = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        walls.append(time.perf_counter() - start)
    table(
        "Cold `arbiter explain` on the shipped project (new process each time)",
        ["runs", "median s", "min s"],
        [[len(walls), f"{percentile(walls, 0.5):.3f}", f"{min(walls):.3f}"]],
    )


if __name__ == "__main__":
    main()
