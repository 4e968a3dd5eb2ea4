"""Shared helpers for the benchmarks: paths, tables, percentiles."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("ARBITER_CORPUS", ROOT.parent / "shared" / "corpus" / "claude-plugins"))
CASES = ROOT / "tests" / "routing"


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells + [list(headers)]) for i in range(len(headers))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
