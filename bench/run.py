"""Run every benchmark of the project, one after another, printing their tables.

Run: python bench/run.py [NAME...] [OPTION...]   (names: accuracy, broker, dsl, routing)
Options (e.g. ``--quick``) reach every benchmark, which takes the ones it knows.
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
    main([arg for arg in sys.argv[1:] if not arg.startswith("-")])
