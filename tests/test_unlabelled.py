"""``allow_unlabelled``: samples without a label are extracted and stored (label -1), never a class,
in no split, so heads never train or score on them; without the flag they stay skipped."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from featx import extract, open_source, train_heads
from featx.cli import cli
from featx.core.errors import BadImageError, FeatxUsageError
from featx.data import UNLABELLED, assign_splits, load_splits, save_splits
from featx.heads import evaluate_head, resolve_splits

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

N_LABELLED, N_UNLABELLED = 30, 5


def _png(seed: int, channel: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 120, (16, 20, 3), dtype=np.uint8)
    pixels[..., channel] = 255  # a class signal
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _shard(path):
    """30 labelled samples (classes 0/1) and 5 without any label member."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for k in range(N_LABELLED):
            add(f"k{k:03d}.png", _png(k, k % 2))
            add(f"k{k:03d}.cls", str(k % 2).encode())
        for k in range(N_UNLABELLED):
            add(f"u{k:03d}.png", _png(100 + k, 2))
    return path


def _parquet(path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image": [_png(k, k % 2) for k in range(4)], "label": ["x", "y", None, "  "]}), path)
    return path


def _unusable(src) -> set[str]:
    bad = set()
    for i, item in enumerate(src.items):
        try:
            src.load(i)
        except BadImageError:
            bad.add(item.id)
    return bad


def test_tar_unlabelled_samples_are_skipped_without_the_flag_and_kept_with_it(tmp_path):
    shard = str(_shard(tmp_path / "s" / "0.tar"))
    plain = open_source(shard)
    assert _unusable(plain) == {f"0/u{k:03d}" for k in range(N_UNLABELLED)} and plain.n_unlabelled == 0
    kept = open_source(shard, allow_unlabelled=True)
    assert kept.class_names == ["0", "1"] and _unusable(kept) == set()
    assert kept.n_unlabelled == N_UNLABELLED
    assert {it.id for it in kept.items if it.label == UNLABELLED} == {f"0/u{k:03d}" for k in range(N_UNLABELLED)}
    # The two readings are two sources: a store of one is never reused for the other.
    assert plain.fingerprint() != kept.fingerprint()


def test_parquet_null_and_blank_labels_are_kept_unlabelled_with_the_flag(tmp_path):
    path = str(_parquet(tmp_path / "p.parquet"))
    plain = open_source(path)
    assert plain.class_names == ["x", "y"] and _unusable(plain) == {"p/2", "p/3"}
    kept = open_source(path, allow_unlabelled=True)
    assert kept.class_names == ["x", "y"] and _unusable(kept) == set()
    assert [it.label for it in kept.items] == [0, 1, UNLABELLED, UNLABELLED]


def test_csv_empty_label_is_an_error_without_the_flag_and_unlabelled_with_it(tmp_path):
    for k in range(3):
        (tmp_path / f"{k}.png").write_bytes(_png(k, k % 2))
    csv = tmp_path / "m.csv"
    csv.write_text("path,label\n0.png,cat\n1.png,dog\n2.png,\n")
    with pytest.raises(FeatxUsageError, match="empty path or label.*--allow-unlabelled"):
        open_source(csv)
    kept = open_source(csv, allow_unlabelled=True)
    assert kept.class_names == ["cat", "dog"] and [it.label for it in kept.items] == [0, 1, UNLABELLED]


def test_a_source_with_no_label_at_all_opens_only_with_the_flag(tmp_path):
    shard = tmp_path / "0.tar"
    with tarfile.open(shard, "w") as tar:
        info = tarfile.TarInfo("a.png")
        data = _png(0, 0)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(FeatxUsageError, match="no sample has a label.*--allow-unlabelled"):
        open_source(str(shard))
    src = open_source(str(shard), allow_unlabelled=True)
    assert src.class_names == [] and src.n_unlabelled == 1


def test_unlabelled_items_are_in_no_split_and_leave_the_others_as_they_were():
    rng = np.random.default_rng(0)
    ids = [f"i{k}" for k in range(60)]
    labels = rng.integers(0, 3, 60)
    alone, _ = assign_splits(ids, labels, seed=3)
    extra = [f"u{k}" for k in range(9)]
    with_unlabelled, rule = assign_splits(ids + extra, np.r_[labels, [UNLABELLED] * 9],
                                          [""] * 60 + ["test"] * 9, seed=3)
    # The labelled items get the very split they get without the unlabelled ones beside them.
    assert list(with_unlabelled[:60]) == list(alone) and set(with_unlabelled[60:]) == {""}
    assert rule["unlabelled"] == 9
    named, _ = assign_splits(ids, np.array(["abc"[k] for k in labels]), seed=3)  # labels as names: as before
    assert list(named) == list(alone)


def test_splits_json_lists_unlabelled_items_apart_and_reads_them_back(tmp_path):
    split = np.array(["train", "test", ""])
    save_splits(tmp_path / "splits.json", ["a", "b", "c"], split, {"rule": "x"})
    doc = json.loads((tmp_path / "splits.json").read_text())
    assert doc["ids"]["unlabelled"] == ["c"] and doc["counts"]["unlabelled"] == 1
    assert list(load_splits(tmp_path / "splits.json", ["a", "b", "c"])) == ["train", "test", ""]


@pytest.fixture(scope="module")
def unlabelled_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("unlabelled")
    src = open_source(str(_shard(root / "s" / "0.tar")), allow_unlabelled=True)
    return extract(src, "test_efficientnet", root / "f.h5", weights="random", quiet=True, workers=0)


def test_kept_samples_are_extracted_and_stored_as_unlabelled(unlabelled_store):
    store = unlabelled_store
    info = store.info()
    assert store.n_done == N_LABELLED + N_UNLABELLED and store.skipped == []
    assert info["n_unlabelled"] == N_UNLABELLED and store.class_names == ["0", "1"]
    assert store.config["unlabelled"] == "kept"
    assert int((store.labels == UNLABELLED).sum()) == N_UNLABELLED
    assert np.isfinite(store.features[store.labels == UNLABELLED]).all()  # real embeddings, usable for predict


def test_train_never_sees_the_unlabelled_rows_and_says_how_many(unlabelled_store, tmp_path, capsys):
    store = unlabelled_store
    entries, models = train_heads(store, ["logreg"], out=tmp_path / "run", quiet=False, return_models=True)
    assert f"{N_UNLABELLED} unlabelled row(s)" in capsys.readouterr().err
    assert set(models["logreg"].predict(store.features[store.labels < 0])) <= {0, 1}  # predictable, never a class
    entry = entries[0]
    assert entry["split_rule"]["unlabelled"] == N_UNLABELLED
    assert entry["n_train"] + entry["n_val"] + entry["n_test"] == N_LABELLED
    assert entry["class_names"] == ["0", "1"] and set(entry["per_class_metrics"]) == {"0", "1"}
    assert sum(map(sum, entry["confusion_matrix"])) == entry["n_test"]
    doc = json.loads((tmp_path / "run" / "splits.json").read_text())
    assert sorted(doc["ids"]["unlabelled"]) == [f"0/u{k:03d}" for k in range(N_UNLABELLED)]
    again = evaluate_head(tmp_path / "run" / "logreg", store.path)
    assert again["n_test"] == entry["n_test"] and again["accuracy"] == entry["accuracy"]


def test_a_split_file_that_gives_unlabelled_rows_a_split_is_overruled(unlabelled_store, tmp_path):
    store = unlabelled_store
    # E.g. written from the source read without the flag: every row, the unlabelled ones in train.
    save_splits(tmp_path / "s.json", store.ids, np.where(store.labels < 0, "train", store.split_assignment()[0]), {})
    split, rule = resolve_splits(store, tmp_path / "s.json")
    assert set(split[store.labels < 0]) == {""} and rule["unlabelled"] == N_UNLABELLED


def test_export_gives_unlabelled_rows_no_class_name(unlabelled_store, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from featx.store import export_store

    table = pq.read_table(export_store(unlabelled_store, tmp_path / "x.parquet")).to_pydict()
    rows = [(lab, name, split) for lab, name, split in zip(table["label"], table["label_name"], table["split"])
            if lab == UNLABELLED]
    assert rows == [(UNLABELLED, None, "")] * N_UNLABELLED
    assert set(table["label_name"]) - {None} == {"0", "1"}


def test_an_export_with_unlabelled_rows_imports_back_with_them_in_no_split(unlabelled_store, tmp_path):
    pytest.importorskip("pyarrow")
    from featx.store import export_store, read_import_source, write_store

    parts = read_import_source(export_store(unlabelled_store, tmp_path / "x.parquet"), "parquet")
    back = write_store(tmp_path / "back.h5", parts["features"], parts["labels"], ids=parts["ids"],
                       splits=parts["splits"])
    assert back.info()["n_unlabelled"] == N_UNLABELLED and back.class_names == ["0", "1"]
    split, _ = back.split_assignment()
    assert set(split[back.labels < 0]) == {""} and "" not in set(split[back.labels >= 0])
    with pytest.raises(FeatxUsageError, match="found -2"):
        write_store(tmp_path / "bad.h5", np.zeros((3, 2), np.float32), [0, 1, -2])


def test_cli_extract_flag_and_info_show_the_count(tmp_path):
    shard = str(_shard(tmp_path / "s" / "0.tar"))
    runner = CliRunner()
    args = ["extract", "--source", shard, "--backbone", "test_efficientnet", "--weights", "random", "-q",
            "--workers", "0"]
    plain = runner.invoke(cli, [*args, "--out", str(tmp_path / "a.h5")])
    assert plain.exit_code == 0, plain.output
    assert f"{N_UNLABELLED} skipped" in plain.output and "unlabelled" not in plain.output
    kept = runner.invoke(cli, [*args, "--out", str(tmp_path / "b.h5"), "--allow-unlabelled"])
    assert kept.exit_code == 0, kept.output
    assert f"0 skipped, {N_UNLABELLED} unlabelled (in no split)" in kept.output
    info = runner.invoke(cli, ["info", str(tmp_path / "b.h5")])
    assert f"{N_UNLABELLED} of them unlabelled" in info.output


def test_cli_finetune_flag_reads_the_source_as_the_store_does(unlabelled_store, tmp_path):
    shard = str(_shard(tmp_path / "s" / "0.tar"))
    runner = CliRunner()
    tuned = runner.invoke(cli, ["finetune", "--source", shard, "--allow-unlabelled", "--mode", "linear", "--epochs", "1",
                                "--backbone", "test_efficientnet", "--weights", "random", "--image-size", "32",
                                "--batch-size", "8", "--workers", "0", "--device", "cpu", "-q",
                                "--out", str(tmp_path / "ft")])
    assert tuned.exit_code == 0, tuned.output
    doc = json.loads((tmp_path / "ft" / "splits.json").read_text())
    assert len(doc["ids"]["unlabelled"]) == N_UNLABELLED
    heads = train_heads(unlabelled_store, ["logreg"], out=tmp_path / "heads")
    assert doc["digest"] == heads[0]["splits_digest"]  # the very split the heads used


def test_sharded_store_keeps_unlabelled_rows_too(tmp_path):
    src = open_source(str(_shard(tmp_path / "s" / "0.tar")), allow_unlabelled=True)
    store = extract(src, "test_efficientnet", tmp_path / "sh", weights="random", quiet=True, workers=0, shard_size=16)
    assert store.info()["n_unlabelled"] == N_UNLABELLED and store.n_done == N_LABELLED + N_UNLABELLED
    split, _ = store.split_assignment()
    assert set(split[store.labels < 0]) == {""}


def test_pipeline_source_option_is_checked(tmp_path):
    from featx.pipeline import load_pipeline

    path = tmp_path / "p.yaml"
    path.write_text("source: {path: digits, allow_unlabelled: maybe}\nbackbones: [test_efficientnet]\nheads: [logreg]\n")
    with pytest.raises(FeatxUsageError, match="allow_unlabelled: must be true or false"):
        load_pipeline(path)
    path.write_text("source: {path: digits, allow_unlabelled: true}\nbackbones: [test_efficientnet]\nheads: [logreg]\n")
    assert load_pipeline(path).source["allow_unlabelled"] is True


def test_run_keeps_unlabelled_samples_out_of_heads_and_fine_tunes_alike(tmp_path):
    import yaml

    shard = _shard(tmp_path / "s" / "0.tar")
    config = tmp_path / "p.yaml"
    config.write_text(yaml.safe_dump({
        "name": "unlab", "source": {"path": str(shard), "allow_unlabelled": True},
        "backbones": [{"name": "test_efficientnet", "weights": "random", "label": "tiny"}], "heads": ["logreg"],
        "finetune": [{"mode": "linear", "epochs": 1, "batch_size": 8, "image_size": 32}],
        "device": "cpu", "out": str(tmp_path / "out"), "raw_pixels": False,
    }))
    result = CliRunner().invoke(cli, ["run", str(config)])
    assert result.exit_code == 0, result.output
    entries = json.loads((tmp_path / "out" / "results.json").read_text())
    assert sorted(e["head"] for e in entries) == ["finetune:linear", "logreg"]
    # One split for both, drawn over the labelled samples only: the unlabelled ones are in none.
    assert len({e["splits_digest"] for e in entries}) == 1
    assert all(e["split_rule"]["unlabelled"] == N_UNLABELLED and e["class_names"] == ["0", "1"] for e in entries)
    assert all(sum(map(sum, e["confusion_matrix"])) == e["n_test"] for e in entries)


def test_array_source_without_labels_is_an_error_unless_allowed_then_stored_unlabelled(tmp_path):
    from featx import resolve_backbone
    from featx.data import ArraySource

    images = np.random.default_rng(0).integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)
    with pytest.raises(FeatxUsageError, match="allow_unlabelled=True"):
        ArraySource(images)  # used to become one class "0"
    with pytest.raises(FeatxUsageError, match=r"None or -1 \(index 2\)"):
        ArraySource(images, [0, 1, None, 1, 0, 1])
    mixed = ArraySource(images, ["cat", "dog", None, "dog", -1, "cat"], allow_unlabelled=True)
    assert mixed.class_names == ["cat", "dog"] and mixed.labels.tolist() == [0, 1, -1, 1, -1, 0]
    source = ArraySource(images, allow_unlabelled=True)
    assert source.n_unlabelled == 6 and source.class_names == []
    store = extract(source, resolve_backbone("test_efficientnet", weights="random"), tmp_path / "u.h5",
                    batch_size=4, workers=0, quiet=True)
    assert store.n_done == 6 and set(store.labels.tolist()) == {UNLABELLED}
