"""Run every benchmark of the project, one after another, printing their tables.

Run: python bench/run.py [NAME...]   (names: dsl, engine, routing, accuracy, broker)
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(names: list[str]) -> None:
    available = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    for name in names or available:
        if name not in available:
            sys.exit(f"unknown benchmark {name!r}; known: {', '.join(available)}")
        print(f"\n=== {name} ===", flush=True)
        runpy.run_path(str(HERE / f"bench_{name}.py"), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
