"""Sharded feature stores with the local engine: layout, equality with a single file, resume
shard by shard, sha256 checks, the exactly-once id check, and every reader going through them."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from featx import FeatureStore, extract
from featx.cli import cli
from featx.core.errors import FeatxError, FeatxUsageError, StoreDamagedError
from featx.core.io import file_sha256
from featx.store import manifest_digest

from .conftest import write_image_folder

TINY = ["--backbone", "test_efficientnet", "--weights", "random"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = write_image_folder(tmp_path_factory.mktemp("shards") / "imgs", n_per_class=6, classes=("a", "b", "c"))
    (root / "b" / "002.png").write_bytes(b"not an image")
    return root


@pytest.fixture(scope="module")
def single(folder, tiny_spec, tmp_path_factory):
    return extract(folder, tiny_spec, tmp_path_factory.mktemp("single") / "f.h5", quiet=True, workers=0)


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def _write_manifest(path, manifest):
    """What a featx writer would have written (its digest recomputed), not a hand edit."""
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_sharded_equals_single_file(folder, tiny_spec, single, tmp_path):
    store = extract(folder, tiny_spec, tmp_path / "s", shard_size=5, quiet=True, workers=0)
    assert isinstance(store, FeatureStore) and store.complete
    assert sorted(p.name for p in (tmp_path / "s").glob("part-*.h5")) == [f"part-{i:05d}.h5" for i in range(4)]
    manifest = _manifest(tmp_path / "s")
    assert manifest["complete"] and manifest["n_shards"] == 4 and manifest["config"] == single.config
    assert [manifest["shards"][str(i)]["rows"] for i in range(4)] == [5, 5, 5, 3]
    assert manifest["shards"]["0"]["first_id"] == "a/000.png"
    assert store.ids.tolist() == single.ids.tolist() and store.skipped == single.skipped
    assert store.labels.tolist() == single.labels.tolist()
    np.testing.assert_allclose(store.features, single.features, atol=1e-5)
    # Reopening by path gives the same view; a second run reuses it.
    again = extract(folder, tiny_spec, tmp_path / "s", shard_size=5, quiet=True, workers=0)
    assert again.reused and again.store_id == store.store_id


def test_resume_rebuilds_only_missing_shards(folder, tiny_spec, single, tmp_path):
    out = tmp_path / "s"
    extract(folder, tiny_spec, out, shard_size=5, quiet=True, workers=0)
    manifest = _manifest(out)
    # A killed run: shard 2 never written, shard 3 committed but the driver died before the manifest.
    (out / "part-00002.h5").unlink()
    kept = (out / "part-00001.h5").stat().st_mtime_ns
    adopted = (out / "part-00003.h5").stat().st_mtime_ns
    del manifest["shards"]["2"], manifest["shards"]["3"]
    manifest["complete"] = False
    _write_manifest(out, manifest)
    partial = FeatureStore(out)
    assert not partial.complete and partial.n_pending == 8
    with pytest.raises(FeatxError, match="incomplete"):
        partial.require_complete()
    resumed = extract(folder, tiny_spec, out, shard_size=5, quiet=True, workers=0)
    assert resumed.complete and not resumed.reused
    assert (out / "part-00001.h5").stat().st_mtime_ns == kept
    assert (out / "part-00003.h5").stat().st_mtime_ns == adopted
    assert resumed.run_info["rows_this_run"] == 5  # only shard 2 ran the backbone
    np.testing.assert_allclose(resumed.features, single.features, atol=1e-5)


def test_sha256_mismatch_is_caught_and_rebuilt(folder, tiny_spec, single, tmp_path):
    out = tmp_path / "s"
    extract(folder, tiny_spec, out, shard_size=5, quiet=True, workers=0)
    with h5py.File(out / "part-00001.h5", "r+") as h5:
        h5["features"][0] = h5["features"][0] + 1.0
    with pytest.raises(StoreDamagedError, match="part-00001.h5"):
        _ = FeatureStore(out).features
    verify = CliRunner().invoke(cli, ["info", str(out), "--verify"])
    assert verify.exit_code == 1 and "part-00001.h5: sha256 differs" in verify.output
    # Resume drops the damaged shard, rebuilds it, and the store reads right again.
    store = extract(folder, tiny_spec, out, shard_size=5, quiet=True, workers=0)
    assert store.run_info["rows_this_run"] == 5
    np.testing.assert_allclose(store.features, single.features, atol=1e-5)


def test_never_complete_with_a_duplicate_id(folder, tiny_spec, tmp_path):
    from featx.store import ShardedWriter

    out = tmp_path / "s"
    extract(folder, tiny_spec, out, shard_size=5, quiet=True, workers=0)
    writer = ShardedWriter.reopen(out)
    with h5py.File(out / "part-00001.h5", "r+") as h5:
        h5["ids"][0] = "a/000.png"  # now shard 0 and shard 1 both claim a/000.png
    with pytest.raises(FeatxError, match="part-00001.h5 sha256 differs"):
        writer.finish({"seconds_this_run": 0})
    # Even a shard whose sha256 was recorded as written (a writer that put the wrong ids in) is refused.
    writer.manifest["shards"]["1"]["sha256"] = file_sha256(out / "part-00001.h5")
    with pytest.raises(FeatxError, match="part-00001.h5 holds other ids than items.h5 lists"):
        writer.finish({"seconds_this_run": 0})


def test_single_file_out_refused_for_shards(folder, tiny_spec, single):
    with pytest.raises(FeatxUsageError, match="single-file store"):
        extract(folder, tiny_spec, single.path, shard_size=5, quiet=True)


def test_cli_info_train_evaluate_on_sharded_store(folder, single, tmp_path):
    runner = CliRunner()
    out = tmp_path / "s"
    made = runner.invoke(cli, ["extract", "--source", str(folder), *TINY, "--out", str(out), "--shard-size", "4",
                               "--workers", "0", "-q"])
    assert made.exit_code == 0, made.output
    info = json.loads(runner.invoke(cli, ["info", str(out), "--json"]).output)
    assert info["complete"] and info["n_done"] == 17 and info["layout"]["n_shards"] == 5
    results = {}
    for name, store in (("sharded", out), ("single", single.path)):
        trained = runner.invoke(cli, ["train", "--features", str(store), "--heads", "logreg",
                                      "--out", str(tmp_path / name)])
        assert trained.exit_code == 0, trained.output
        evaluated = runner.invoke(cli, ["evaluate", "--model", str(tmp_path / name / "logreg"),
                                        "--features", str(store), "--json"])
        assert evaluated.exit_code == 0, evaluated.output
        results[name] = json.loads(evaluated.output)
    assert results["sharded"]["accuracy"] == results["single"]["accuracy"]
    assert results["sharded"]["n_test"] == results["single"]["n_test"] > 0


@pytest.mark.parametrize("layout", ["single", "sharded"])
def test_export_parquet_reads_back_with_pyarrow(folder, tiny_spec, single, tmp_path, layout):
    pq = pytest.importorskip("pyarrow.parquet")
    store = single if layout == "single" else extract(folder, tiny_spec, tmp_path / "s", shard_size=4, quiet=True,
                                                      workers=0)
    result = CliRunner().invoke(cli, ["export", str(store.path), "--format", "parquet", str(tmp_path / "f.parquet")])
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "f.parquet")
    assert table.schema.field("features").type.list_size == store.dim
    assert table["id"].to_pylist() == store.ids.tolist()
    assert table["label"].to_pylist() == store.labels.tolist()
    assert table["label_name"].to_pylist() == [store.class_names[i] for i in store.labels]
    assert table["split"].to_pylist() == store.split_assignment()[0].tolist()
    features = np.asarray(table["features"].combine_chunks().flatten()).reshape(-1, store.dim)
    np.testing.assert_allclose(features, store.features, atol=1e-6)
    assert json.loads(table.schema.metadata[b"featx"])["store_id"] == store.store_id


def test_export_refuses_incomplete_store(folder, tiny_spec, tmp_path):
    out = tmp_path / "s"
    extract(folder, tiny_spec, out, shard_size=5, quiet=True, workers=0)
    (out / "part-00000.h5").unlink()
    manifest = _manifest(out)
    del manifest["shards"]["0"]
    manifest["complete"] = False
    _write_manifest(out, manifest)
    result = CliRunner().invoke(cli, ["export", str(out), str(tmp_path / "f.parquet")])
    assert result.exit_code == 1 and "incomplete" in result.output
    assert not (tmp_path / "f.parquet").exists()


def test_reuse_reads_each_shard_once(folder, tiny_spec, tmp_path, monkeypatch):
    """Reuse checks every shard (sha256, ids, shape) and compares the source with the item records
    in one read of each shard, not a sha256 pass and then a second read for the records."""
    from collections import Counter
    from pathlib import Path

    from featx.core import io as core_io
    from featx.store import _store, _writer

    out = tmp_path / "s"
    extract(folder, tiny_spec, out, shard_size=5, quiet=True, workers=0)
    reads = Counter()
    real_read_bytes, real_sha = Path.read_bytes, core_io.file_sha256

    def read_bytes(self):
        reads[self.name] += self.name.startswith("part-")
        return real_read_bytes(self)

    def sha(path):
        reads[Path(path).name] += Path(path).name.startswith("part-")
        return real_sha(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    for module in (core_io, _store, _writer):
        monkeypatch.setattr(module, "file_sha256", sha, raising=False)
    again = extract(folder, tiny_spec, out, shard_size=5, quiet=True, workers=0)
    assert again.reused
    assert {name: n for name, n in reads.items() if n} == {f"part-{i:05d}.h5": 1 for i in range(4)}
