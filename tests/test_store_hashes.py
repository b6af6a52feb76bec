"""Every store carries a hash over what its rows mean: a sharded manifest its manifest_sha256
(refused when missing in a format that always writes it), a single file its header_sha256
(over the attributes and the item listing); stores written before either keep opening. A
killed export's temporary file is removed by the next export to that OUT."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from featx import FeatureStore, extract
from featx.cli import cli
from featx.core.errors import StoreDamagedError
from featx.store import FORMAT_VERSION, export_store, verify_store

from .conftest import write_image_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("hashes") / "imgs", n_per_class=4, classes=("a", "b"))


@pytest.fixture(scope="module")
def made(folder, tiny_spec, tmp_path_factory):
    root = tmp_path_factory.mktemp("made")
    single = extract(folder, tiny_spec, root / "f.h5", quiet=True, workers=0)
    sharded = extract(folder, tiny_spec, root / "s", shard_size=3, quiet=True, workers=0)
    return single.path, sharded.path


@pytest.fixture
def single(made, tmp_path):
    return shutil.copy(made[0], tmp_path / "f.h5")


@pytest.fixture
def sharded(made, tmp_path):
    return shutil.copytree(made[1], tmp_path / "s")


def _verify_cli(path):
    return CliRunner().invoke(cli, ["info", str(path), "--verify"])


def _edit_manifest(path, change):
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


# -- sharded: a manifest without its hash --------------------------------------------------


def test_a_manifest_without_its_hash_is_refused(sharded):
    _edit_manifest(sharded, lambda m: m.pop("manifest_sha256"))
    with pytest.raises(StoreDamagedError, match="no manifest_sha256.*--overwrite"):
        FeatureStore(sharded)
    result = _verify_cli(sharded)
    assert result.exit_code == 1 and "no manifest_sha256" in result.output and "Traceback" not in result.output


def test_a_format_1_manifest_with_a_nonce_must_have_its_hash(sharded):
    # Format 1 manifests with a nonce were written by code that always wrote the digest too.
    _edit_manifest(sharded, lambda m: (m.pop("manifest_sha256"), m.update(featx_format=1)))
    with pytest.raises(StoreDamagedError, match="no manifest_sha256"):
        FeatureStore(sharded)


def test_a_manifest_from_before_digests_still_opens(sharded):
    def old(manifest):
        for key in ("manifest_sha256", "nonce", "config_sha256", "items_sha256"):
            del manifest[key]
        manifest["featx_format"] = 1

    _edit_manifest(sharded, old)
    store = FeatureStore(sharded)
    assert store.complete and len(store.features) == 8
    assert verify_store(sharded).ok


# -- single file: a hash over its attributes and item listing -----------------------------


def test_a_new_file_store_carries_a_header_hash_that_verifies(single):
    with h5py.File(single, "r") as h5:
        assert int(h5.attrs["featx_format"]) == FORMAT_VERSION == 2 and len(h5.attrs["header_sha256"].strip()) == 64
    report = verify_store(single)
    assert report.ok and "header_sha256" in report.checked
    assert FeatureStore(single).complete


def _reverse_json(h5, name):
    h5.attrs[name] = json.dumps(list(reversed(json.loads(h5.attrs[name]))))


EDITS = {
    "class names reversed": lambda h5: _reverse_json(h5, "class_names"),
    "config edited": lambda h5: h5.attrs.modify("config", h5.attrs["config"].replace('"avg"', '"max"')),
    "fingerprint edited": lambda h5: h5.attrs.modify("fingerprint", "0" * 16),
    "content digest edited": lambda h5: h5.attrs.modify("content_digest", np.bytes_(b"0" * 32)),
    "ids swapped": lambda h5: h5["ids"].__setitem__(slice(0, 2), h5["ids"].asstr()[:2][::-1].tolist()),
    "labels swapped": lambda h5: h5["labels"].__setitem__(0, 1 - int(h5["labels"][0])),
    "splits edited": lambda h5: h5["splits"].__setitem__(0, "test"),
    "hash deleted": lambda h5: h5.attrs.__delitem__("header_sha256"),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_edits_of_a_file_stores_attributes_are_caught(single, edit):
    with h5py.File(single, "r") as h5:
        assert '"avg"' in h5.attrs["config"]
    with h5py.File(single, "r+") as h5:
        EDITS[edit](h5)
    with pytest.raises(StoreDamagedError, match="damaged.*--overwrite"):
        FeatureStore(single)
    report = verify_store(single)
    assert not report.ok and any(p.startswith("header: ") for p in report.problems)
    result = _verify_cli(single)
    assert result.exit_code == 1 and "header" in result.output and "Traceback" not in result.output


def test_a_format_1_file_without_a_header_hash_still_opens(single):
    with h5py.File(single, "r+") as h5:
        h5.attrs["featx_format"] = 1
        del h5.attrs["header_sha256"]
        _reverse_json(h5, "class_names")  # format 1 had no hash: nothing to catch this with
    store = FeatureStore(single)
    assert store.complete and store.class_names == ["b", "a"]
    report = verify_store(single)
    assert report.ok and "header (format 1: no header_sha256)" in report.unchecksummed


def test_a_resumed_file_store_is_sealed_again(folder, tiny_spec, single):
    with h5py.File(single, "r+") as h5:  # a run killed after its last row, before finishing
        h5.attrs.modify("complete", False)
    again = extract(folder, tiny_spec, single, quiet=True, workers=0)
    assert again.complete and not again.reused and verify_store(single).ok


# -- export: a killed export's temporary file ----------------------------------------------


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_export_removes_a_killed_exports_temporary_file(made, tmp_path):
    out = tmp_path / "f.parquet"
    stale = tmp_path / f".f.parquet.{_dead_pid()}.tmp"
    live = tmp_path / f".f.parquet.{os.getppid()}.tmp"  # a running process's: not ours to remove
    other = tmp_path / f".g.parquet.{_dead_pid()}.tmp"  # another OUT's: left to that OUT's export
    for path in (stale, live, other):
        path.write_bytes(b"PAR1 half written")
    export_store(made[0], out)
    assert out.is_file() and not stale.exists()
    assert live.exists() and other.exists()
