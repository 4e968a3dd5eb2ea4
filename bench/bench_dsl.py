"""Parse + compile time of rules: the shipped rules and 10 / 100 / 1,000 generated rules.

Run: python bench/bench_dsl.py
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from arbiter.dsl.program import load_rules

from arbiter.project.plugins import load_plugins
from arbiter.routing.engine.engines import durable_available, make_engine

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ["fastapi-backend", "lobbi-platform-manager", "home-assistant", "jira-orchestrator", "exec-automator"]
DOMAINS = ["backend", "api", "database", "authentication", "frontend", "deployment", "smart-home", "iot"]


def generated(n: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.sample(DOMAINS, 2)
        cond = rng.choice(
            [
                f"domain {a}",
                f"domain {a} and not domain {b}",
                f"urgency >= {rng.randint(1, 9)}",
                f"domain {a} or text matches /w{i}/i",
            ]
        )
        out.append(
            f"rule g{i} {{\n  priority {rng.randint(0, 99)}\n  when {cond}\n"
            f'  then prefer {rng.choice(PLUGINS)} by {rng.randint(1, 20)}\n  because "generated {i}"\n}}\n'
        )
    return "\n".join(out)


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    plugins, _ = load_plugins([ROOT / "plugins"])
    by_name = {p.name: p for p in plugins}
    engines = ["python"] + (["durable"] if durable_available() else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = [("shipped rules/", ROOT / "rules")]
        for n in (10, 100, 1000):
            folder = Path(tmp) / f"g{n}"
            folder.mkdir()
            (folder / "gen.arb").write_text(generated(n))
            cases.append((f"{n} generated", folder))
        for label, folder in cases:
            bundle = load_rules([folder], by_name)
            repeat = 3 if "1000" in label else 10
            parse_ms = timed(lambda f=folder: load_rules([f], by_name), repeat)
            row = [label, str(len(bundle.ruleset.rules)), f"{parse_ms:.1f}"]
            for kind in engines:
                engine = make_engine(kind)

                def compile_release(e=engine, rs=bundle.ruleset):
                    e.release(e.compile(rs))

                row.append(f"{timed(compile_release, repeat):.1f}")
            rows.append(row)
    headers = ["rules", "count", "parse+check ms"] + [f"compile ms ({k})" for k in engines]
    widths = [max(len(r[i]) for r in rows + [headers]) for i in range(len(headers))]
    print("Parse and compile (median)")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
