"""Routing accuracy over the corpus: ours against a plain BM25 baseline, side by side.

The labelled requests live in tests/routing/: corpus_cases.yaml (the set routing was tuned on),
corpus_holdout.yaml (30 requests written alongside it, never used to tune), corpus_dev.yaml (160
requests written from the plugins' own files without sight of the router, then used to develop
and tune its methods: questions, typos, work with a deliverable and context), corpus_train.yaml
(340 requests written the same way by another hand, frozen, then used to develop and calibrate
methods), and corpus_independent.yaml (273 requests written from the plugins' own files by
someone who had not seen the router or the other sets, frozen before any change it could have
guided, and never used to tune: the honest measure). Top-1 counts a correct primary (or a
correct "no route"); top-3 counts the expected plugin among the three best for routable
requests; no-route precision and recall are about the requests no plugin should take; "route or
not" is the share of requests whose answer was rightly a route or rightly none (whichever plugin
was chosen).

Run: python bench/bench_accuracy.py            # every set
     python bench/bench_accuracy.py --sets corpus_cases,corpus_holdout,corpus_dev,corpus_train
     (only those: the sets routing is calibrated on)
     (--misses lists each set's wrong answers, with the lead's words)
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CASES, CORPUS, percentile, table  # noqa: E402

from arbiter.project.plugins import load_plugins  # noqa: E402
from arbiter.project.snapshot import build_snapshot  # noqa: E402
from arbiter.routing.pipeline import (
    Request,
    Router,  # noqa: E402
)

SETS = ("corpus_cases", "corpus_holdout", "corpus_dev", "corpus_train", "corpus_independent")


class BM25:
    """The textbook baseline: one document per plugin (all its text), k1=1.2, b=0.75."""

    def __init__(self, plugins):
        self.names = [p.name for p in plugins]
        docs = []
        for p in plugins:
            parts = [p.name, p.description, " ".join(p.keywords)]
            parts += [f"{c.name} {c.description} {' '.join(c.keywords)} {c.body}" for c in p.components()]
            docs.append(Counter(re.findall(r"[a-z0-9]+", " ".join(parts).lower())))
        self.docs = docs
        self.avg = sum(sum(d.values()) for d in docs) / len(docs)
        df = Counter(t for d in docs for t in d)
        n = len(docs)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    def rank(self, text: str) -> list[str]:
        terms = re.findall(r"[a-z0-9]+", text.lower())
        scores = []
        for name, doc in zip(self.names, self.docs):
            length = sum(doc.values())
            s = 0.0
            for t in terms:
                f = doc.get(t, 0)
                if f:
                    s += self.idf[t] * f * 2.2 / (f + 1.2 * (0.25 + 0.75 * length / self.avg))
            scores.append((s, name))
        return [n for s, n in sorted(scores, reverse=True)]


def folder_names(plugins) -> dict[str, str]:
    """Folder name -> plugin name, where they differ: labels written from the files name folders."""
    return {Path(p.path).name: p.name for p in plugins if Path(p.path).name != p.name}


def labelled(cases, names: dict[str, str]):
    """The cases with their labels in plugin names."""
    out = []
    for case in cases:
        case = dict(case)
        case["expect"] = names.get(case["expect"], case["expect"])
        case["also"] = [names.get(a, a) for a in case.get("also", ())]
        out.append(case)
    return out


def score(cases, predict):
    top1 = top3 = routable = none_ok = none_total = none_said = gate_ok = 0
    misses = Counter()
    latencies = []
    for case in cases:
        expect = None if case["expect"] == "none" else case["expect"]
        ok = {expect, *case.get("also", [])}
        start = time.perf_counter()
        primary, best3 = predict(case)
        latencies.append(time.perf_counter() - start)
        top1 += primary in ok
        if primary not in ok:
            misses[str(expect)] += 1
        if expect is None:
            none_total += 1
            none_ok += primary is None
        else:
            routable += 1
            top3 += bool(ok & set(best3))
        none_said += primary is None
        gate_ok += (primary is None) == (expect is None)
    return {
        "n": len(cases),
        "top1": top1 / len(cases),
        "top3": top3 / max(routable, 1),
        "none_p": none_ok / none_said if none_said else float("nan"),
        "none_r": none_ok / max(none_total, 1),
        "gate": gate_ok / len(cases),
        "p50": percentile(latencies, 0.5) * 1e6,
        "p99": percentile(latencies, 0.99) * 1e6,
        "misses": misses,
    }


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated sets to run (default: all)")
    parser.add_argument("--misses", action="store_true", help="list each set's wrong answers")
    args = parser.parse_args()
    args.sets = tuple(s.strip() for s in args.sets.split(",") if s.strip())
    unknown = [s for s in args.sets if s not in SETS]
    if unknown:
        parser.error(f"unknown set(s): {', '.join(unknown)}; known: {', '.join(SETS)}")
    return args


def main() -> None:
    args = arguments()
    with tempfile.TemporaryDirectory() as tmp:
        router = Router(build_snapshot(Path(tmp), [CORPUS]), engine="python")
    plugins, _ = load_plugins([CORPUS])
    bm25 = BM25(plugins)

    wrong: list[list[object]] = []

    def ours(case):
        result = router.route(Request(case["text"], tuple(case.get("files", ()))))
        ranked = [s.plugin for s in result.scores if s.eligible and s.score > 0][:3]
        primary = result.decision.primary_plugin
        if args.misses and primary not in {None if case["expect"] == "none" else case["expect"], *case["also"]}:
            lead = result.scores[0] if result.scores else None
            said = f"{lead.relevance:.2f} {', '.join(lead.evidence[:4])}" if lead else ""
            wrong.append([case["set"], case["expect"], primary, said, case["text"][:90]])
        return primary, ranked

    def baseline(case):
        text = case["text"] + " " + " ".join(case.get("files", ()))
        ranked = bm25.rank(text)
        return ranked[0], ranked[:3]

    rows = []
    results = {}
    for label in args.sets:
        cases = labelled(yaml.safe_load((CASES / f"{label}.yaml").read_text()), folder_names(plugins))
        for case in cases:
            case["set"] = label
        for name, predict in (("arbiter", ours), ("bm25 baseline", baseline)):
            r = score(cases, predict)
            results[(label, name)] = r
            rows.append(
                [
                    label,
                    name,
                    r["n"],
                    f"{r['top1']:.3f}",
                    f"{r['top3']:.3f}",
                    f"{r['none_p']:.2f}",
                    f"{r['none_r']:.2f}",
                    f"{r['gate']:.3f}",
                    f"{r['p50']:.0f}",
                    f"{r['p99']:.0f}",
                ]
            )
    table(
        "Routing accuracy over 34 corpus plugins",
        ["set", "router", "requests", "top-1", "top-3", "no-route P", "no-route R", "route or not", "p50 us", "p99 us"],
        rows,
    )
    ratio = [
        [label, f"{results[(label, 'arbiter')]['top1'] / results[(label, 'bm25 baseline')]['top1']:.2f}x"]
        for label in args.sets
    ]
    table("Top-1 ratio, arbiter / bm25 (same run)", ["set", "ratio"], ratio)
    if "corpus_cases" in args.sets:
        misses = results[("corpus_cases", "arbiter")]["misses"]
        table("Arbiter misses by expected plugin (corpus_cases)", ["expected", "misses"], sorted(misses.items()))
    if args.misses:
        table("Arbiter's wrong answers", ["set", "expected", "routed to", "lead's relevance, words", "text"], wrong)


if __name__ == "__main__":
    main()
