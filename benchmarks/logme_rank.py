"""Does LogME rank the search's candidates as well as its default proxy (logreg on val)?

    python benchmarks/logme_rank.py RUN_DIR SOURCE           # RUN_DIR: a `featx search --out` folder

Reads the finished search (RUN_DIR/search/search.json) and every candidate's cached
subsample stores (nothing is extracted), computes LogME on each store's train + val rows,
and compares two predictors of a candidate's quality on a larger sample:

* the target: the logreg val accuracy the search measured at rung 1 (``min_per_class * eta``
  per class), for every candidate that reached rung 1;
* the predictors, both at rung 0: the search's logreg val accuracy, and LogME.

Spearman rank correlations (scipy) and whether each predictor's top pick is the target's
best are printed; as is LogME at rung 1 against logreg at rung 1. Candidates that did not
reach rung 1 have no target (the halving pruned them), so the comparison is among the
rung-0 survivors, which favours neither predictor by construction but is small.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("source")
    args = parser.parse_args()

    from scipy.stats import spearmanr

    from featx.heads import FeatureSet, logme_score
    from featx.pipeline import parse_search
    from featx.pipeline._search import _Searcher  # the search's own store paths and sets
    from featx.pipeline._search_space import candidates, informed_space
    from featx.store import FeatureStore

    doc = json.loads((args.run_dir / "search" / "search.json").read_text())
    spec = parse_search(doc["spec"])
    split = {"split_seed": doc["split"]["seed"], "val_fraction": doc["split"]["val_fraction"],
             "test_fraction": doc["split"]["test_fraction"]}
    searcher = _Searcher(args.source, spec, args.run_dir / "search", split, "cpu", True)
    space = dict(spec.space)
    if doc.get("note"):
        space, _ = informed_space(spec, 0, {b["label"]: 10 ** 6 for b in spec.backbones})
    searcher.share_layers(space)
    by_id = {e["candidate"]: e for e in doc["search"] if " + " not in e["candidate"]}
    rung0, rung1 = spec.min_per_class, spec.min_per_class * spec.eta
    rows, started = [], time.perf_counter()
    for cand in candidates(spec, space):
        entry = by_id.get(cand.id)
        scores = {s["per_class"]: s["proxy_score"] for s in (entry or {}).get("scores", [])}
        row = {"id": cand.id, "logreg0": scores.get(rung0), "logreg1": scores.get(rung1)}
        for pc, name in ((rung0, "logme0"), (rung1, "logme1")):
            path = searcher.store_path(cand, pc, searcher.extraction(cand))
            if not path.exists():
                path = searcher.store_path(cand, pc, cand.extract_options())
            if not path.exists():
                continue
            store = FeatureStore(path)
            fs = FeatureSet([store], [searcher.sets_of(cand, store)])
            train_val = fs.splits != "test"
            row[name] = logme_score(fs.features[train_val], fs.labels[train_val])
        rows.append(row)
    logme_seconds = time.perf_counter() - started
    both = [r for r in rows if r["logreg1"] is not None and "logme0" in r]
    print(f"{len(rows)} candidates; {len(both)} reached rung 1 ({rung1}/class); LogME on all stores in "
          f"{logme_seconds:.0f} s; load average {os.getloadavg()[0]:.1f}")
    target = [r["logreg1"] for r in both]
    for name in ("logreg0", "logme0"):
        rho = spearmanr([r[name] for r in both], target).statistic
        pick = max(both, key=lambda r: r[name])
        print(f"rung-0 {name:8s} vs rung-1 logreg val: Spearman {rho:+.3f}; its top pick {pick['id']!r} "
              f"scores {pick['logreg1']:.4f} at rung 1 (best {max(target):.4f})")
    at1 = [r for r in both if "logme1" in r]
    if len(at1) > 2:
        rho = spearmanr([r["logme1"] for r in at1], [r["logreg1"] for r in at1]).statistic
        print(f"rung-1 LogME vs rung-1 logreg val ({len(at1)} candidates): Spearman {rho:+.3f}")
    all0 = [r for r in rows if "logme0" in r and r["logreg0"] is not None]
    rho = spearmanr([r["logme0"] for r in all0], [r["logreg0"] for r in all0]).statistic
    print(f"rung-0 LogME vs rung-0 logreg val ({len(all0)} candidates): Spearman {rho:+.3f}")
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
