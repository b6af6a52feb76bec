"""The budgeted search over frozen configurations: successive halving on growing, stratified
subsamples of train and val, scored by the logreg head's own selection on val.

Protocol (every choice on val, test never read):

1. The full source's split is computed first (the same seeded assignment the heads
   make on the full store), and its test items are set aside for good.
2. Rung ``r`` takes ``min_per_class * eta**r`` train and as many val items per class
   (nested: a rung's items contain the previous rung's), extracts every surviving
   candidate on them (one store per candidate and rung, cached under its own key, so
   a rerun or a widened space extracts only what is new) and scores it: the logreg
   head's C selection on val (:func:`featx.heads.select_and_fit`), its val accuracy.
   A layers candidate is scored on pooled + its layers, concatenated.
3. The best ``ceil(n / eta)`` go on (ties: the cheaper extraction); the rest are pruned
   with the rung, their score and the cut-off. One left, or the train split
   exhausted, ends the halving. The budget is checked before every rung: when the
   next rung's predicted cost (this rung's cost per candidate times eta) would not
   fit, the search stops and the best so far is chosen ("budget").
4. ``combine``: at the last rung's size, the best candidate of each other backbone is
   added to the winner, greedily, while the concatenation scores higher on val.

scikit-learn's ``HalvingGridSearchCV`` grows the *training rows* of one fixed feature
matrix; here every candidate is its own extraction (its own features), so the halving
is written out. Results: :func:`run_search` returns a document whose ``search`` list
has one entry per candidate (config, proxy score, subsample size, cost seconds,
``pruned`` or ``chosen`` and why) and whose ``chosen`` list says what to extract on
the full source.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import FeatxError, FeatxUsageError
from ._search_space import Candidate, SearchSpec, candidates, informed_space

__all__ = ["run_search", "SEARCH_FILE", "image_side", "chosen_summary"]

SEARCH_FILE = "search.json"
PROXIES = {"logreg": "logreg val accuracy (C chosen on val)",
           "logme": "LogME evidence per item on train + val (no head fitted)"}


@dataclass
class _Result:
    """A candidate's record as the halving goes: its score per rung and its cost."""

    candidate: Candidate
    scores: list = field(default_factory=list)   # (rung, per_class, n_train, n_val, score)
    cost: float = 0.0
    extract_cost: float = 0.0  # as the stores recorded it: the same on a rerun, so ties break the same way
    reused: bool = True
    status: str = "running"
    reason: str = ""
    stores: dict = field(default_factory=dict)   # per_class -> store path
    sets: list = field(default_factory=list)     # the store's sets this candidate is scored on
    correct: dict = field(default_factory=dict)  # per_class -> per val item: the proxy got it right
    candidate_proxy: str = "logreg"

    @property
    def score(self) -> float:
        return self.scores[-1][4] if self.scores else float("-inf")

    def entry(self) -> dict:
        rung, per_class, n_train, n_val, score = self.scores[-1] if self.scores else (None, None, 0, 0, None)
        return {"candidate": self.candidate.id, "config": self.candidate.config(), "proxy_score": score,
                "proxy": PROXIES[self.candidate_proxy], "subsample_size": n_train + n_val, "round": rung,
                "sets": list(self.sets),
                "subsample": {"per_class": per_class, "n_train": n_train, "n_val": n_val, "rung": rung},
                "scores": [{"rung": r, "per_class": p, "proxy_score": s} for r, p, _, _, s in self.scores],
                "cost_seconds": round(self.cost, 3), "reused": self.reused, "status": self.status,
                "reason": self.reason}


def image_side(source, n: int = 32) -> float | None:
    """Median shorter side of up to ``n`` evenly spaced images (None when none can be read)."""
    sides = []
    for index in np.linspace(0, len(source) - 1, num=min(n, len(source))).astype(int):
        image, _, _ = source.load_item(int(index))
        if image is not None:
            sides.append(min(image.size))
    return float(np.median(sides)) if sides else None


def _input_sides(spec: SearchSpec) -> dict[str, int]:
    from ..extraction import create_backbone, resolve_backbone

    out = {}
    for bb in spec.backbones:
        _, data_config = create_backbone(resolve_backbone(bb["name"], weights=bb["weights"]))
        out[bb["label"]] = int(data_config["input_size"][-1])
    return out


class _Searcher:
    """One search run: the source, its train/val pool, the cache folder and the clock."""

    def __init__(self, source, spec: SearchSpec, out: Path, split: dict, device: str, quiet: bool):
        from ..data import assign_splits, open_source

        self.src, self.spec, self.out, self.device, self.quiet = open_source(source), spec, Path(out), device, quiet
        self.split = {"seed": split.get("split_seed", 0), "val_fraction": split.get("val_fraction", 0.1),
                      "test_fraction": split.get("test_fraction", 0.2)}
        self.splits, _ = assign_splits(self.src.ids, self.src.labels, [it.split for it in self.src.items],
                                       **self.split)
        self.pool = np.flatnonzero(np.isin(self.splits, ("train", "val")))
        if not (self.splits == "val").any():
            raise FeatxUsageError("search: the split has no val items to score candidates on; raise val_fraction")
        self.spent = 0.0  # see elapsed
        self.budget = spec.budget_minutes * 60.0
        self.shared_layers: tuple = ()  # see share_layers
        self.used: set[Path] = set()     # stores already charged to a candidate in this run

    def share_layers(self, space: dict) -> None:
        """Extract every candidate with the union of the space's layers: the pooled set comes out of the
        same pass, so a pooled-only candidate and its layers twin share one extraction (half the cost)."""
        union: list = []
        for value in space.get("layers", ()):
            union.extend(i for i in (value or ()) if i not in union)
        self.shared_layers = tuple(union)

    def extraction(self, candidate: Candidate) -> dict:
        """The extract options of ``candidate``'s store: its own, with the shared layers."""
        options = candidate.extract_options()
        if self.shared_layers:
            options["layers"] = list(self.shared_layers)
        return options

    def sets_of(self, candidate: Candidate, store) -> list[str]:
        """The sets ``candidate`` is scored on: pooled, plus the sets of its own layers (by position in the union)."""
        names = _sets(store)
        own = candidate.option("layers") or ()
        if not self.shared_layers:
            return names
        return [names[0], *(names[1 + self.shared_layers.index(i)] for i in own)]

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"featx search: {text}", file=sys.stderr, flush=True)

    @property
    def elapsed(self) -> float:
        """What the budget is charged: each extraction at the seconds its store recorded (a cached store
        too) plus the proxy fits. Wall time would let a cached rerun go further than the run it repeats."""
        return self.spent

    def charge(self, seconds: float) -> None:
        self.spent += seconds

    def subsample(self, per_class: int) -> np.ndarray:
        from ..data import subset_indices

        ids = [self.src.items[int(i)].id for i in self.pool]
        picked = subset_indices(ids, self.src.labels[self.pool], self.splits[self.pool], per_class=per_class,
                                seed=self.spec.seed)
        return self.pool[picked]

    def max_per_class(self) -> int:
        train = self.pool[self.splits[self.pool] == "train"]
        return int(np.bincount(self.src.labels[train]).max()) if train.size else 0

    def store_for(self, candidate: Candidate, per_class: int, items: np.ndarray):
        """The candidate's store on ``items`` (train/val labelled as in the full split), extracted or reused.
        Extracted with the shared layers; when those fail (a layer the model lacks), with its own options."""
        own = candidate.extract_options()
        shared = self.extraction(candidate)
        if shared != own:
            try:
                return self._extract(candidate, per_class, items, shared)
            except FeatxError:
                self.shared_layers = ()  # sets_of then reads the candidate's own store
        return self._extract(candidate, per_class, items, own)

    def store_path(self, candidate: Candidate, per_class: int, options: dict) -> Path:
        """Where the candidate's store at ``per_class`` extracted with ``options`` is cached."""
        config = {**candidate.config(), **options}
        key = hashlib.sha256(json.dumps({"config": config, "per_class": per_class, "seed": self.spec.seed,
                                         "split": self.split, "n": len(self.src)}, sort_keys=True,
                                        default=str).encode()).hexdigest()[:12]
        return self.out / "features" / f"{candidate.label}__pc{per_class}__{key}.h5"

    def _extract(self, candidate: Candidate, per_class: int, items: np.ndarray, options: dict):
        from ..data import SubsetSource
        from ..extraction import extract, resolve_backbone

        path = self.store_path(candidate, per_class, options)
        sub = SubsetSource(self.src, items, splits=list(self.splits[items]))
        spec = resolve_backbone(candidate.backbone["name"], weights=candidate.backbone["weights"])
        started = time.perf_counter()
        store = extract(sub, spec, path, batch_size=self.spec.batch_size, workers=self.spec.workers,
                        threads=self.spec.threads, device=self.device, quiet=True, **options)
        seconds = store.run_info.get("extract_seconds_total")
        seconds = float(seconds if seconds is not None else time.perf_counter() - started)
        if path in self.used:  # its twin paid for this extraction already
            seconds = 0.0
        self.used.add(path)
        return store, seconds


def _proxy(features, proxy: str = "logreg") -> tuple[float, float, np.ndarray | None]:
    """(score, seconds, per val item right or not) on a train/val store or set: the logreg head's val accuracy
    with C chosen on val, or (``logme``) the LogME evidence of train + val, which fits no head (no per-item result)."""
    from ..heads import select_and_fit

    started = time.perf_counter()
    X, y, splits = features.features, features.labels, features.splits
    train, val = splits == "train", splits == "val"
    if len(np.unique(y[train])) < 2 or not val.any():
        raise FeatxError("search: a subsample has fewer than two classes in train or no val items; raise min_per_class")
    if proxy == "logme":
        from ..heads import logme_score

        return logme_score(X[train | val], y[train | val]), time.perf_counter() - started, None
    model, record = select_and_fit("logreg", (X[train], y[train]), (X[val], y[val]), (X[train], y[train]))
    # The refit (train alone, at the chosen C) gives the val predictions the paired comparison reads.
    correct = model.predict(X[val]) == y[val]
    return float(record["val_accuracy"]), time.perf_counter() - started, correct


def _sets(store) -> list[str]:
    return [s["name"] for s in store.feature_sets]


def _evaluate(searcher: _Searcher, result: _Result, rung: int, per_class: int, items: np.ndarray) -> None:
    from ..heads import FeatureSet

    store, seconds = searcher.store_for(result.candidate, per_class, items)
    result.reused &= bool(store.reused)
    result.sets = searcher.sets_of(result.candidate, store)
    features = store if _sets(store) == result.sets == ["pooled"] else FeatureSet([store], [result.sets])
    result.candidate_proxy = searcher.spec.proxy
    score, fit_seconds, result.correct[per_class] = _proxy(features, searcher.spec.proxy)
    result.cost += seconds + fit_seconds
    result.extract_cost += seconds
    searcher.charge(seconds + fit_seconds)
    result.stores[per_class] = store
    splits = store.splits
    result.scores.append((rung, per_class, int((splits == "train").sum()), int((splits == "val").sum()), score))
    searcher.say(f"rung {rung} ({per_class}/class): {result.candidate.id}: {score:.4f} "
                 f"({'cached' if store.reused else f'{seconds:.1f} s'})")


def _evaluate_or_drop(searcher: _Searcher, result: _Result, rung: int, per_class: int, items: np.ndarray) -> bool:
    """Evaluate ``result``; a candidate that cannot be extracted or scored is pruned with its reason, not fatal."""
    try:
        _evaluate(searcher, result, rung, per_class, items)
    except FeatxError as exc:
        result.status, result.reason = "pruned", f"failed at rung {rung} ({per_class}/class): {str(exc).splitlines()[0]}"
        searcher.say(f"rung {rung}: {result.candidate.id}: {result.reason}")
        return False
    return True


def _halve(searcher: _Searcher, results: list[_Result]) -> tuple[list[_Result], int]:
    """Successive halving; returns the survivors of the last rung (best first) and its per-class size."""
    spec, alive, rung = searcher.spec, list(results), 0
    per_class, top = spec.min_per_class, searcher.max_per_class()
    while True:
        per_class = min(per_class, top)
        items = searcher.subsample(per_class)
        before = searcher.elapsed
        alive = [r for r in alive if _evaluate_or_drop(searcher, r, rung, per_class, items)]
        if not alive:
            raise FeatxError("search: no candidate could be extracted and scored; the reasons are in the candidates' "
                             f"records, e.g. {results[0].reason}")
        alive.sort(key=lambda r: (-r.score, r.extract_cost))  # stable: equal ones keep the candidates' order
        rung_cost = searcher.elapsed - before
        if len(alive) == 1 or per_class >= top:
            return alive, per_class
        evaluated, keep = len(alive), max(1, math.ceil(len(alive) / spec.eta))
        cutoff = alive[keep - 1].score
        for result in alive[keep:]:
            result.status = "pruned"
            result.reason = (f"rung {rung} ({per_class}/class): {result.score:.4f} below the cut-off {cutoff:.4f} "
                             f"(best {keep} of {len(alive)} kept)")
        alive = alive[:keep]
        predicted = rung_cost / evaluated * len(alive) * spec.eta  # eta x the items for each survivor
        if searcher.elapsed + predicted > searcher.budget:
            for result in alive[1:]:
                result.status = "pruned"
                result.reason = (f"budget: the next rung (~{predicted:.0f} s) would pass {spec.budget_minutes:g} "
                                 f"min; {result.score:.4f} below the best {alive[0].score:.4f} at {per_class}/class")
            return alive[:1], per_class
        rung, per_class = rung + 1, per_class * spec.eta


def _combine(searcher: _Searcher, winner: _Result, results: list[_Result], per_class: int) -> list[dict]:
    """Greedy concatenation of the winner with each other backbone's best candidate.

    Each trial is judged against what it extends on the same items, at the largest rung where
    both already have stores (no new extraction), but never below rung 1 (``min_per_class * eta``
    per class, capped at ``per_class``): a concatenation of wide sets fitted on 20 items per class
    says little. Extracting every other backbone at the last rung instead cost more than the halving.
    """
    entries, chosen, best, best_correct, best_pc = [], [winner], winner.score, winner.correct[per_class], per_class
    floor, base_of_best = min(per_class, searcher.spec.min_per_class * searcher.spec.eta), None
    others = {}
    for result in sorted((r for r in results if r.scores), key=lambda r: (-(r.scores[-1][1]), -r.score)):
        if result.candidate.label != winner.candidate.label:
            others.setdefault(result.candidate.label, result)
    for label, result in others.items():
        if searcher.elapsed > searcher.budget:
            break
        trial = [*chosen, result]
        pc = max(p for p in result.stores if all(p in r.stores for r in chosen))
        if pc < floor:
            pc, items = floor, searcher.subsample(floor)
            if not all(_evaluate_or_drop(searcher, r, 1, pc, items) for r in trial if pc not in r.stores):
                continue
            result.reason += f"; scored again at {pc}/class as {label}'s best for the concatenation"
        base, base_correct = _combined_score(searcher, chosen, pc)
        started = time.perf_counter()
        score, correct = _combined_score(searcher, trial, pc)
        searcher.charge(time.perf_counter() - started)
        # Another backbone costs a whole extraction of the source: it is added only for a gain the
        # paired bootstrap on the same val items can tell from noise (LogME has no per-item answers,
        # so it compares scores alone).
        gain = None if correct is None or base_correct is None else _paired(correct, base_correct, f"without {label}")
        keep = score > base and (gain is None or gain["ci"][0] > 0)
        entry = {"candidate": " + ".join(r.candidate.id for r in trial),
                 "config": {"stores": [r.candidate.config() for r in trial]}, "proxy_score": score,
                 "proxy": PROXIES[searcher.spec.proxy], "subsample_size": _n_items(trial[0].stores[pc]),
                 "subsample": {"per_class": pc}, "cost_seconds": round(time.perf_counter() - started, 3),
                 "status": "chosen" if keep else "pruned", **({"paired": gain} if gain else {}),
                 "reason": _combine_reason(score, base, gain, keep, label, pc)}
        searcher.say(f"combine at {pc}/class: {entry['candidate']}: {score:.4f} (without {label}: {base:.4f})")
        for earlier in entries:
            if keep and earlier["status"] == "chosen":
                earlier["status"], earlier["reason"] = "pruned", f"superseded by {entry['candidate']}"
        entries.append(entry)
        if keep:
            chosen, best, best_correct, best_pc = trial, score, correct, pc
            base_of_best = base_correct
    head = {"combination": [r.candidate.id for r in chosen], "score": best, "per_class": best_pc}
    if len(chosen) > 1 and best_correct is not None:
        head["paired"] = _paired(best_correct, base_of_best, "without " + chosen[-1].candidate.label)
    return [head, *entries]


def _combine_reason(score: float, base: float, gain: dict | None, keep: bool, label: str, pc: int) -> str:
    ci = "" if gain is None else f" (paired gain {gain['diff']:+.3f} [{gain['ci'][0]:+.3f}, {gain['ci'][1]:+.3f}])"
    if keep:
        return f"{score:.4f} above {base:.4f} without {label} at {pc}/class{ci}"
    if score > base:
        return f"{score:.4f} above {base:.4f} without {label} at {pc}/class, but a gain that could be noise{ci}"
    return f"{score:.4f} not above {base:.4f} without {label} at {pc}/class{ci}"


def _n_items(store) -> int:
    return int(len(store.labels))


def _combined_score(searcher: _Searcher, members: list[_Result], per_class: int) -> tuple[float, np.ndarray | None]:
    """The proxy of ``members`` concatenated at ``per_class`` (a single member: its recorded score)."""
    from ..heads import FeatureSet

    if len(members) == 1:
        only = members[0]
        return next(s[4] for s in only.scores if s[1] == per_class), only.correct[per_class]
    fs = FeatureSet([r.stores[per_class] for r in members], [r.sets for r in members])
    score, _, correct = _proxy(fs, searcher.spec.proxy)
    return score, correct


def _runner_up(winner: _Result, results: list[_Result]) -> dict | None:
    """The winner against the runner-up of the last rung it shared with another candidate, on those val items."""
    for per_class in sorted(winner.correct, reverse=True):
        rivals = [r for r in results if r is not winner and per_class in r.correct]
        if rivals and winner.correct[per_class] is not None:
            best = max(rivals, key=lambda r: max(s[4] for s in r.scores if s[1] == per_class))
            return {**_paired(winner.correct[per_class], best.correct[per_class], best.candidate.id),
                    "per_class": per_class}
    return None


def _paired(correct_a, correct_b, against: str) -> dict:
    """The chosen configuration against ``against`` on the same val items: paired bootstrap of the difference."""
    from ..core.paired import paired_bootstrap

    return {"against": against, **paired_bootstrap(correct_a, correct_b)}


def _chosen(results: list[_Result]) -> list[dict]:
    return [{"backbone": dict(r.candidate.backbone), "options": r.candidate.extract_options(), "candidate": r.candidate.id,
             "sets": list(r.sets)} for r in results]


def chosen_summary(doc: dict) -> str:
    """One sentence: what won, with its preprocessing, on how much data and at what cost."""
    parts = []
    for c in doc["chosen"]:
        opts = c["options"]
        shown = ", ".join(f"{k} {','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in opts.items())
        parts.append(f"{c['backbone']['label']} ({shown or 'its default preprocessing'})")
    text = (f"chosen on val: {' + '.join(parts)}; proxy {doc['score']:.4f} at {doc['per_class']}/class; "
            f"{doc['n_candidates']} candidates in {doc['seconds']:.0f} s")
    paired = doc.get("paired")
    if paired:
        lo, hi = paired["ci"]
        verdict = "a real gain" if lo > 0 else "cannot tell apart"
        text += (f"; vs {paired['against']}: {paired['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}] on {paired['n']} val items "
                 f"(paired bootstrap: {verdict})")
    return text + (f"; {doc['note']}" if doc.get("note") else "")


def run_search(source, spec: SearchSpec, out, *, split: dict | None = None, device: str = "auto",
               quiet: bool = False) -> dict:
    """Search ``spec`` on ``source``; write and return the search document (see the module docstring).

    ``out``: the folder of the candidates' stores (``features/``) and ``search.json``.
    ``split``: ``split_seed``, ``val_fraction``, ``test_fraction`` of the full source (the heads' defaults).
    """
    from ..core.io import json_text, write_atomic

    searcher = _Searcher(source, spec, Path(out), split or {}, device, quiet)
    from ..data import SubsetSource

    # Image sizes read from train/val items only: nothing of the search looks at test.
    side = image_side(SubsetSource(searcher.src, searcher.pool))
    space, note = informed_space(spec, side, _input_sides(spec))
    searcher.share_layers(space)
    if note:
        searcher.say(note)
    results = [_Result(c) for c in candidates(spec, space)]
    searcher.say(f"{len(results)} candidates, budget {spec.budget_minutes:g} min")
    alive, per_class = _halve(searcher, results)
    winner = alive[0]
    winner.status, winner.reason = "chosen", f"best at {per_class}/class ({winner.score:.4f})"
    chosen, score, combos = [winner], winner.score, []
    paired = _runner_up(winner, results)
    if spec.combine and len(spec.backbones) > 1:
        head, *combos = _combine(searcher, winner, results, per_class)
        by_id = {r.candidate.id: r for r in results}
        chosen, score = [by_id[i] for i in head["combination"]], head["score"]
        per_class = head["per_class"]  # where the chosen concatenation was scored
        paired = head.get("paired", paired)
        for r in chosen[1:]:
            r.status, r.reason = "chosen", f"joins the winner: the concatenation scores {score:.4f} on val"
    doc = {"search": [r.entry() for r in results] + combos, "chosen": _chosen(chosen), "score": score,
           "per_class": per_class, "seconds": round(searcher.elapsed, 3), "note": note, "proxy": PROXIES[spec.proxy],
           "spec": spec.to_dict(), "split": searcher.split, "n_candidates": len(results), "paired": paired}
    # The search's cost as its stores recorded it (extraction seconds plus proxy fits): the same on a
    # cached rerun, whose own ``seconds`` are only what that rerun took.
    doc["cost_seconds"] = round(sum(e["cost_seconds"] for e in doc["search"]), 3)
    doc["summary"] = chosen_summary(doc)
    write_atomic(Path(out) / SEARCH_FILE, json_text(doc))
    searcher.say(doc["summary"])
    return doc
