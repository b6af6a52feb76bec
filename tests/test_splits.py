"""Split and few-shot draws depend only on ids, labels and seed, and match between store and source."""

from __future__ import annotations

import numpy as np
import pytest

import featx
from featx import FeatxError, FeatxUsageError
from featx.data._splits import assign_splits, few_shot_mask, load_splits, save_splits, splits_digest
from featx.heads._train import split_record

from .conftest import write_image_folder


def _toy(n_per_class=50, classes=3):
    ids = [f"c{c}/{i:03d}.png" for c in range(classes) for i in range(n_per_class)]
    labels = np.repeat(np.arange(classes), n_per_class)
    return ids, labels


def test_stratified_split_of_a_source_without_splits():
    ids, labels = _toy()
    splits, rule = assign_splits(ids, labels, seed=0)
    for c in range(3):
        counts = {s: int(((splits == s) & (labels == c)).sum()) for s in ("train", "val", "test")}
        assert counts == {"train": 35, "val": 5, "test": 10}
    assert rule["rule"].startswith("stratified")
    assert not np.array_equal(splits, assign_splits(ids, labels, seed=1)[0])


def test_source_splits_are_kept_and_val_is_carved_from_train():
    ids, labels = _toy(20)
    given = np.where(np.arange(60) % 4 == 0, "test", "train")
    splits, rule = assign_splits(ids, labels, given, val_fraction=0.1)
    assert np.array_equal(splits == "test", given == "test")
    assert (splits == "val").sum() > 0 and set(np.flatnonzero(splits == "val")) <= set(np.flatnonzero(given == "train"))
    assert "val carved from train" in rule["rule"]


def test_draws_ignore_order_and_other_items():
    ids, labels = _toy()
    splits, _ = assign_splits(ids, labels)
    order = np.random.default_rng(0).permutation(len(ids))
    shuffled, _ = assign_splits([ids[i] for i in order], labels[order])
    assert dict(zip(ids, splits)) == dict(zip([ids[i] for i in order], shuffled))
    keep = few_shot_mask(ids, labels, splits, 5, seed=3)
    assert (keep & (splits != "train")).sum() == 0 and np.bincount(labels[keep]).tolist() == [5, 5, 5]
    # Removing one chosen item (a bad image) replaces it by the next in rank, nothing else moves.
    dropped = np.flatnonzero(keep)[0]
    usable = np.ones(len(ids), dtype=bool)
    usable[dropped] = False
    again = few_shot_mask(ids, labels, splits, 5, seed=3, usable=usable)
    assert (again & keep).sum() == 14 and again.sum() == 15 and not again[dropped]


def test_bad_fractions_and_sizes():
    ids, labels = _toy(5)
    with pytest.raises(FeatxUsageError):
        assign_splits(ids, labels, val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(FeatxUsageError):
        few_shot_mask(ids, labels, ["train"] * len(ids), 0)


def test_save_and_load_round_trip(tmp_path):
    ids, labels = _toy(10)
    splits, rule = assign_splits(ids, labels)
    path = save_splits(tmp_path / "splits.json", ids, splits, rule)
    assert load_splits(path, ids[::-1]).tolist() == splits[::-1].tolist()
    with pytest.raises(FeatxError, match="does not cover"):
        load_splits(path, ids + ["new.png"])


def test_store_records_the_same_split_as_the_source(tmp_path, tiny_spec):
    folder = write_image_folder(tmp_path / "imgs", n_per_class=12, classes=("a", "b"))
    (folder / "a" / "003.png").write_bytes(b"")
    store = featx.extract(folder, tiny_spec, tmp_path / "f.h5", quiet=True)
    usable_split, rule = store.split_assignment()
    ids, full = split_record(store, usable_split, rule)
    src = featx.open_source(folder)
    source_split, _ = assign_splits(src.ids, src.labels, [it.split for it in src.items])
    assert list(ids) == src.ids and full.tolist() == source_split.tolist()
    assert splits_digest(ids, full) == splits_digest(src.ids, source_split)
    # A recorded split of every item can be reloaded for the store's usable rows.
    path = save_splits(tmp_path / "splits.json", ids, full, rule)
    assert load_splits(path, store.ids).tolist() == usable_split.tolist()
