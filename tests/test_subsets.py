"""Subsets and threads at extract: --per-class / --limit (stratified, seeded, nested, recorded), --threads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from featx import ArraySource, FeatureStore, FeatxUsageError, StoreMismatchError, extract
from featx.cli import cli
from featx.data import subset_indices, subset_source

FAST = {"img_size": 32, "crop_pct": 1.0, "quiet": True, "batch_size": 8}


def _labels(n_per_class=(30, 10, 5)):
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)])
    return [f"id{i:03d}" for i in range(len(labels))], labels


def test_per_class_and_limit_are_stratified_seeded_and_nested():
    ids, labels = _labels()
    splits = [""] * len(ids)
    picked = subset_indices(ids, labels, splits, per_class=6, seed=0)
    assert np.bincount(labels[picked]).tolist() == [6, 6, 5]  # a class smaller than N is kept whole
    assert picked.tolist() == subset_indices(ids, labels, splits, per_class=6, seed=0).tolist()
    assert picked.tolist() != subset_indices(ids, labels, splits, per_class=6, seed=1).tolist()
    small = subset_indices(ids, labels, splits, per_class=3, seed=0)
    assert set(small) <= set(picked)  # growing subsamples contain the smaller ones
    limited = subset_indices(ids, labels, splits, limit=9, seed=0)
    assert len(limited) == 9 and np.bincount(labels[limited]).tolist() == [6, 2, 1]  # in proportion 30:10:5
    # The draw depends on the ids, not on their order.
    order = np.random.default_rng(0).permutation(len(ids))
    shuffled = subset_indices([ids[k] for k in order], labels[order], splits, per_class=6, seed=0)
    assert sorted(ids[k] for k in order[shuffled]) == sorted(ids[k] for k in picked)


def test_per_class_keeps_each_split_of_the_source():
    ids, labels = _labels((8, 8))
    splits = ["test" if i % 4 == 0 else "train" for i in range(len(ids))]
    picked = subset_indices(ids, labels, splits, per_class=3)
    kept = [(splits[k], int(labels[k])) for k in picked]
    assert {g: kept.count(g) for g in set(kept)} == {("train", 0): 3, ("train", 1): 3, ("test", 0): 2, ("test", 1): 2}
    with pytest.raises(FeatxUsageError, match="per_class"):
        subset_indices(ids, labels, splits, per_class=0)


def test_extract_subset_is_recorded_in_config_and_key(tmp_path, tiny_spec):
    images = np.random.default_rng(0).integers(0, 255, (24, 32, 32, 3), dtype=np.uint8)
    src = ArraySource(images, labels=[i % 3 for i in range(24)], name="arr")
    store = extract(src, tiny_spec, tmp_path / "s.h5", per_class=2, **FAST)
    assert store.n_items == 6 and np.bincount(store.labels).tolist() == [2, 2, 2]
    assert store.config["subset"] == {"per_class": 2, "seed": 0}
    picked = subset_source(src, per_class=2).ids
    assert list(store.all_ids) == picked
    # The same rows as the full store's rows for those ids: a subset changes which items, not their features.
    full = extract(src, tiny_spec, tmp_path / "f.h5", **FAST)
    rows = [list(full.all_ids).index(i) for i in picked]
    np.testing.assert_allclose(store.features, full.features[rows], rtol=1e-5, atol=1e-6)
    assert "subset" not in full.config
    assert extract(src, tiny_spec, tmp_path / "s.h5", per_class=2, **FAST).reused
    with pytest.raises(StoreMismatchError):
        extract(src, tiny_spec, tmp_path / "s.h5", per_class=3, **FAST)
    from featx.extraction import default_store_path

    assert default_store_path(src, tiny_spec, extra={"subset": {"per_class": 2, "seed": 0}}) != default_store_path(src, tiny_spec)


def test_threads_are_set_for_the_run_recorded_and_restored(tmp_path, tiny_spec, monkeypatch):
    images = np.random.default_rng(1).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
    src = ArraySource(images, labels=[i % 2 for i in range(8)], name="arr")
    before = torch.get_num_threads()
    seen = []
    import featx.extraction._extractor as extractor

    real = extractor.run_extraction  # the loop, which runs inside the run's thread setting
    monkeypatch.setattr(extractor, "run_extraction", lambda *a, **k: (seen.append(torch.get_num_threads()), real(*a, **k))[1])
    target = 1 if before != 1 else 2
    store = extract(src, tiny_spec, tmp_path / "t.h5", threads=target, **FAST)
    assert seen == [target] and torch.get_num_threads() == before
    assert store.run_info["threads"] == target and "threads" not in store.config
    with pytest.raises(FeatxUsageError, match="threads"):
        extract(src, tiny_spec, tmp_path / "u.h5", threads=0, **FAST)


def test_cli_per_class_limit_threads(tmp_path):
    runner = CliRunner()
    out = tmp_path / "d.h5"
    args = ["extract", "--source", "digits", "--backbone", "test_efficientnet", "--weights", "random", "--out", str(out),
            "--img-size", "32", "--crop-pct", "1.0", "--batch-size", "64", "--quiet"]
    result = runner.invoke(cli, [*args, "--per-class", "3", "--limit", "20", "--threads", "1"])
    assert result.exit_code == 0, result.output
    store = FeatureStore(out)
    assert store.n_items == 20 and store.config["subset"] == {"per_class": 3, "limit": 20, "seed": 0}
    assert '"per_class": 3' in runner.invoke(cli, ["info", str(out)]).output  # info says it is a subset
    bad = runner.invoke(cli, [*args, "--per-class", "0"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def _sources(tmp_path):
    """One source of each kind with 12 items: folder, CSV, arrays, digits, tar shards, Parquet with image paths."""
    import tarfile

    from featx import DigitsSource, open_source

    from .conftest import write_image_folder
    from .test_scale_sources import _add, _png

    folder = write_image_folder(tmp_path / "imgs", n_per_class=6)
    csv = tmp_path / "m.csv"
    csv.write_text("path,label\n" + "".join(f"imgs/{c}/{i:03d}.png,{c}\n" for c in ("cat", "dog") for i in range(6)))
    rng = np.random.default_rng(0)
    arrays = ArraySource(rng.integers(0, 255, (12, 8, 8, 3), dtype=np.uint8), labels=np.arange(12) % 2)
    shards = tmp_path / "shards"
    shards.mkdir()
    for s in range(3):
        with tarfile.open(shards / f"{s}.tar", "w") as tar:
            for k in range(4):
                _add(tar, f"k{k}.png", _png(10 * s + k))
                _add(tar, f"k{k}.cls", str(k % 2).encode())
    found = [open_source(folder), open_source(csv), arrays, DigitsSource(), open_source(str(shards / "{0..2}.tar"))]
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    paths = [f"imgs/{c}/{i:03d}.png" for c in ("cat", "dog") for i in range(6)]
    pq.write_table(pa.table({"image": paths, "label": [p.split("/")[1] for p in paths]}), tmp_path / "p.parquet")
    return [*found, open_source(str(tmp_path / "p.parquet"))]


def test_a_subset_reads_only_its_own_items_markers_and_keeps_the_fingerprint(tmp_path, monkeypatch):
    from featx.data import SubsetSource

    for base in _sources(tmp_path):
        picked = [1, 4, 7]
        full = list(base._content_markers())
        subset = SubsetSource(base, picked)
        # The markers (so the fingerprint, the store's cache key) are the full list's, item for item...
        assert list(subset._content_markers()) == [full[i] for i in picked], base.kind
        asked = []
        original = type(base)._content_markers
        monkeypatch.setattr(type(base), "_content_markers",
                            lambda self, indices=None, _o=original, _a=asked: _a.append(indices) or _o(self, indices))
        subset.fingerprint()
        monkeypatch.undo()
        # ... computed for the subset's items only, never for the whole base.
        assert [list(map(int, a)) for a in asked] == [picked], base.kind
