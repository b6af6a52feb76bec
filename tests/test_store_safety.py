"""Nothing lost, nothing deleted: --overwrite replaces only featx stores and builds beside the old
one; a store never lands on, in or around its source; export refuses to write over the store or
an unknown file and reads only verified shards; shards carry their store's nonce and config;
manifest edits fail verification; killed writers' temporary files go on resume."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from featx import FeatureStore, extract, resolve_backbone
from featx.cli import cli
from featx.core.errors import FeatxUsageError, StoreDamagedError
from featx.store import iter_verified_shards, manifest_digest, verify_store

from .conftest import write_image_folder

TINY = ["--backbone", "test_efficientnet", "--weights", "random", "--workers", "0", "-q"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("safety") / "imgs", n_per_class=5, classes=("a", "b"))


@pytest.fixture(scope="module")
def single(folder, tiny_spec, tmp_path_factory):
    return extract(folder, tiny_spec, tmp_path_factory.mktemp("single") / "f.h5", quiet=True, workers=0)


@pytest.fixture(scope="module")
def max_spec():
    return resolve_backbone("test_efficientnet", weights="random", pooling="max")


@pytest.fixture
def sharded(folder, tiny_spec, tmp_path):
    return extract(folder, tiny_spec, tmp_path / "s", shard_size=3, quiet=True, workers=0)


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def _cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _one_line_error(result, code):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output


# -- --overwrite replaces only featx stores --------------------------------------------------


def test_overwrite_refuses_a_directory_that_is_not_a_store(folder, tmp_path):
    notes = tmp_path / "u" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("x")
    for extra in ([], ["--overwrite"]):
        result = _cli("extract", "--source", folder, "--out", notes.parent, *TINY, *extra)
        _one_line_error(result, 2)
        assert "not a featx feature store" in result.output and "notes.txt" in result.output
        assert "--overwrite to" not in result.output  # never advised for something featx did not write
    assert notes.read_text() == "x"


def test_overwrite_refuses_a_file_that_is_not_a_store(folder, tmp_path):
    for content in (b"my notes", b"\x89HDF\r\n\x1a\n" + b"\0" * 64):  # text, and an HDF5-looking stranger
        other = tmp_path / "notes.h5"
        other.write_bytes(content)
        result = _cli("extract", "--source", folder, "--out", other, *TINY, "--overwrite")
        _one_line_error(result, 2)
        assert other.read_bytes() == content


def test_overwrite_still_replaces_a_damaged_featx_store(folder, tiny_spec, single, tmp_path):
    out = tmp_path / "f.h5"
    data = single.path.read_bytes()
    out.write_bytes(data[: len(data) // 2])  # truncated: unreadable, but recognisably featx's
    store = extract(folder, tiny_spec, out, overwrite=True, quiet=True, workers=0)
    np.testing.assert_array_equal(store.features, single.features)


def test_out_at_in_or_around_the_source_is_refused(folder, tmp_path):
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    for out in (folder, folder / "a", folder / "a" / "x.h5", folder.parent):
        for extra in ([], ["--overwrite"], ["--shard-size", "3", "--overwrite"]):
            result = _cli("extract", "--source", folder, "--out", out, *TINY, *extra)
            _one_line_error(result, 2)
            assert "source" in result.output
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before


def test_out_around_a_csv_sources_images_is_refused(folder, tmp_path):
    csv = tmp_path / "list.csv"
    csv.write_text("path,label\n" + "".join(f"{p},{p.parent.name}\n" for p in sorted(folder.rglob("*.png"))))
    for out in (csv, folder.parent):
        _one_line_error(_cli("extract", "--source", csv, "--out", out, *TINY, "--overwrite"), 2)
    assert csv.exists() and len(list(folder.rglob("*.png"))) == 10


def test_sharded_overwrite_keeps_the_old_store_until_the_new_one_is_complete(folder, max_spec, sharded,
                                                                              monkeypatch):
    import featx.extraction._extractor as engine

    old = FeatureStore(sharded.path).features.copy()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "_run", killed)
    with pytest.raises(KeyboardInterrupt):
        extract(folder, max_spec, sharded.path, shard_size=4, overwrite=True, quiet=True, workers=0)
    kept = FeatureStore(sharded.path)
    assert kept.complete and kept.config["backbone"]["pooling"] == "avg"
    np.testing.assert_array_equal(kept.features, old)
    monkeypatch.undo()
    new = extract(folder, max_spec, sharded.path, shard_size=4, overwrite=True, quiet=True, workers=0)
    assert new.complete and new.config["backbone"]["pooling"] == "max" and new.manifest["shard_size"] == 4
    assert not sharded.path.with_name("s.new").exists()


def test_a_run_without_overwrite_removes_a_killed_overwrites_new_file(folder, tiny_spec, single, tmp_path):
    out = tmp_path / "f.h5"
    shutil.copy(single.path, out)
    leftover = tmp_path / "f.h5.new"
    shutil.copy(single.path, leftover)
    assert extract(folder, tiny_spec, out, quiet=True, workers=0).reused
    assert not leftover.exists()


# -- export ----------------------------------------------------------------------------------


def test_export_refuses_the_store_itself_and_paths_inside_it(single, sharded):
    for store, out in ((single.path, single.path), (sharded.path, sharded.path / "manifest.json"),
                       (sharded.path, sharded.path / "x.parquet"), (sharded.path, sharded.path)):
        before = {p: p.read_bytes() for p in [single.path, *sharded.path.iterdir()]}
        for extra in ([], ["--overwrite"]):
            result = _cli("export", store, out, *extra)
            assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert {p: p.read_bytes() for p in before} == before
    assert FeatureStore(single.path).complete and verify_store(sharded.path).ok


def test_export_replaces_only_its_own_file_and_only_when_asked(single, tmp_path):
    out = tmp_path / "f.parquet"
    assert _cli("export", single.path, out).exit_code == 0
    _one_line_error(_cli("export", single.path, out), 2)
    assert _cli("export", single.path, out, "--overwrite").exit_code == 0
    other = tmp_path / "notes.parquet"
    other.write_text("mine")
    _one_line_error(_cli("export", single.path, other, "--overwrite"), 2)
    assert other.read_text() == "mine"


def _break(path, how):
    if how == "bit flip":
        with h5py.File(path / "part-00001.h5", "r+") as h5:
            h5["features"][0] = h5["features"][0] + 1.0
    elif how == "swapped shard":
        shutil.copy(path / "part-00000.h5", path / "part-00001.h5")
    elif how == "deleted shard":
        (path / "part-00001.h5").unlink()
    elif how == "truncated shard":
        data = (path / "part-00001.h5").read_bytes()
        (path / "part-00001.h5").write_bytes(data[: len(data) // 2])
    elif how in ("edited dim", "edited dim, no digest"):
        manifest = _manifest(path)
        manifest["dim"] += 1
        if how.endswith("no digest"):  # as a manifest from before the digest would be
            del manifest["manifest_sha256"]
        (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("how", ["bit flip", "swapped shard", "deleted shard", "truncated shard", "edited dim",
                                 "edited dim, no digest"])
def test_export_of_a_damaged_sharded_store_is_one_line_and_no_file(sharded, tmp_path, how):
    _break(sharded.path, how)
    out = tmp_path / "f.parquet"
    _one_line_error(_cli("export", sharded.path, out), 1)
    assert not out.exists() and not list(tmp_path.glob(".f.parquet*"))
    with pytest.raises(StoreDamagedError):
        list(iter_verified_shards(sharded.path))


def test_verified_iteration_equals_the_features(single, sharded):
    for store in (single, FeatureStore(sharded.path)):
        blocks = list(iter_verified_shards(store.path))
        ids, labels, splits, feats = (np.concatenate(parts) for parts in zip(*blocks))
        np.testing.assert_array_equal(feats, store.features)
        assert ids.tolist() == store.ids.tolist() and labels.tolist() == store.labels.tolist()
        assert splits.tolist() == store.splits.tolist() and feats.dtype == np.float32
    assert len(list(iter_verified_shards(sharded.path))) == 4  # one block per shard


# -- manifests, stamps, leftovers ------------------------------------------------------------


@pytest.mark.parametrize("edit", ["class names reversed", "entries swapped", "entry dropped"])
def test_manifest_edits_fail_verification(sharded, edit):
    manifest = _manifest(sharded.path)
    if edit == "class names reversed":
        manifest["class_names"].reverse()
    elif edit == "entries swapped":
        shards = manifest["shards"]
        shards["0"], shards["1"] = shards["1"], shards["0"]
    else:
        del manifest["shards"]["3"]
    (sharded.path / "manifest.json").write_text(json.dumps(manifest))
    result = _cli("info", sharded.path, "--verify")
    assert result.exit_code == 1 and "edited" in result.output
    with pytest.raises(StoreDamagedError, match="edited"):
        FeatureStore(sharded.path)


def test_resume_never_adopts_another_runs_shard(folder, tiny_spec, max_spec, single, tmp_path):
    avg = extract(folder, tiny_spec, tmp_path / "avg", shard_size=3, quiet=True, workers=0)
    other = extract(folder, max_spec, tmp_path / "max", shard_size=3, quiet=True, workers=0)
    # The avg run killed after shard 1, beside the max run's later shards (same names, same ids).
    manifest = _manifest(avg.path)
    for index in ("2", "3"):
        del manifest["shards"][index]
        shutil.copy(other.path / f"part-0000{index}.h5", avg.path / f"part-0000{index}.h5")
    manifest["complete"] = False
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (avg.path / "manifest.json").write_text(json.dumps(manifest))
    resumed = extract(folder, tiny_spec, avg.path, shard_size=3, quiet=True, workers=0)
    assert resumed.complete and resumed.run_info["rows_this_run"] == 4
    np.testing.assert_allclose(resumed.features, single.features, atol=1e-5)
    assert verify_store(avg.path).ok


def test_resume_removes_a_killed_writers_temporary_files(folder, tiny_spec, sharded):
    stray = [sharded.path / ".part-00001.h5.4242.deadbeef.tmp", sharded.path / ".items.h5.tmp"]
    for path in stray:
        path.write_bytes(b"half a shard")
    assert extract(folder, tiny_spec, sharded.path, shard_size=3, quiet=True, workers=0).reused
    assert not any(p.exists() for p in stray)


def test_another_shard_size_on_an_existing_store_is_said(folder, tiny_spec, sharded, capsys):
    again = extract(folder, tiny_spec, sharded.path, shard_size=5, quiet=True, workers=0)
    assert again.reused and again.manifest["shard_size"] == 3
    assert "--shard-size 3" in capsys.readouterr().err


def test_stores_from_before_digests_and_stamps_keep_opening_and_resuming(folder, tiny_spec, single, sharded):
    manifest = _manifest(sharded.path)
    for key in ("manifest_sha256", "nonce", "config_sha256", "items_sha256"):
        del manifest[key]
    manifest["featx_format"] = 1  # as those manifests were
    del manifest["shards"]["1"]
    manifest["complete"] = False
    (sharded.path / "manifest.json").write_text(json.dumps(manifest))
    (sharded.path / "part-00001.h5").unlink()
    assert FeatureStore(sharded.path).n_pending == 3
    resumed = extract(folder, tiny_spec, sharded.path, shard_size=3, quiet=True, workers=0)
    assert resumed.complete and resumed.run_info["rows_this_run"] == 3
    np.testing.assert_allclose(resumed.features, single.features, atol=1e-5)


# -- one loop for both layouts ---------------------------------------------------------------


def test_sharded_stores_check_each_items_content(tiny_spec, tmp_path):
    import os

    images = write_image_folder(tmp_path / "imgs", n_per_class=4, classes=("a", "b"))
    out = tmp_path / "s"
    first = extract(images, tiny_spec, out, shard_size=3, quiet=True, workers=0)
    assert first.has_item_hashes and first.content_digest
    # A plain touch: the same bytes, so the store is reused, not refused as "source changed".
    os.utime(images / "a" / "001.png")
    assert extract(images, tiny_spec, out, shard_size=3, quiet=True, workers=0).reused
    # Another image's bytes under the same name and mtime: that shard, and only that one, is extracted again.
    stat = (images / "a" / "001.png").stat()
    (images / "a" / "001.png").write_bytes((images / "b" / "002.png").read_bytes())
    os.utime(images / "a" / "001.png", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = extract(images, tiny_spec, out, shard_size=3, quiet=True, workers=0)
    assert not again.reused and again.run_info["rows_this_run"] == 3
    fresh = extract(images, tiny_spec, tmp_path / "f.h5", quiet=True, workers=0)
    np.testing.assert_allclose(again.features, fresh.features, atol=1e-6)
    assert again.store_id != first.store_id and verify_store(out).ok


def test_sharded_stores_take_the_feature_options(folder, tiny_spec, tmp_path):
    options = dict(layers="-1,-2", views="hflip", quiet=True, workers=0)
    single = extract(folder, tiny_spec, tmp_path / "f.h5", **options)
    sharded = extract(folder, tiny_spec, tmp_path / "s", shard_size=4, **options)
    assert sharded.config == single.config
    assert [s["name"] for s in sharded.feature_sets] == [s["name"] for s in single.feature_sets]
    for item in single.feature_sets:
        # Batches differ (shard-aligned vs batch-aligned blocks): equal up to float rounding.
        np.testing.assert_allclose(sharded.feature_set(item["name"]), single.feature_set(item["name"]), atol=1e-6)


def test_raw_pixel_overwrite_replaces_only_a_featx_store(tmp_path):
    from featx.extraction import extract_raw_pixels

    other = tmp_path / "raw.h5"
    other.write_text("mine")
    with pytest.raises(FeatxUsageError, match="not a featx feature store"):
        extract_raw_pixels("digits", other, size=4, overwrite=True)
    assert other.read_text() == "mine"
    made = extract_raw_pixels("digits", tmp_path / "r.h5", size=4)
    again = extract_raw_pixels("digits", made.path, size=5, overwrite=True)
    assert again.complete and again.dim == 75 and not (tmp_path / "r.h5.new").exists()
