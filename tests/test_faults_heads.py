"""Fault injection on the heads side: kills, full disks, damaged and tampered heads, tiny data, Ctrl-C.

* Kill points: a forked child saves (or trains and saves) a head and SIGKILLs itself
  before its Nth file-system step (fsync, rename, exchange, removal), for every N; the
  parent then checks the head directory is the old head or the new one, complete, and
  that a mix of the two is refused by ``load_head`` / ``featx evaluate``.
* Full disks: ``os.fsync`` raises ENOSPC/EIO for one named file; every write path must
  end with one line naming it, exit 1, no temporary files, the earlier file untouched.
* Damaged and tampered heads: each is refused with one line, never scored.
* Tiny data and Ctrl-C: see the tests' names.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from threadpoolctl import threadpool_limits

import featx.core.io as featx_io
from featx import (
    ArraySource,
    FeatureStore,
    FeatxError,
    evaluate_head,
    finetune,
    load_head,
    resolve_backbone,
    train_heads,
)
from featx.cli import cli
from featx.core.errors import DiskError, StoreDamagedError
from featx.heads._manifest import manifest_digest
from featx.heads._persist import save_head
from featx.heads._train import select_and_fit, training_rows
from featx.pipeline import write_report
from featx.store import StoreWriter
from tests._head_stores import write_store

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fault injection uses fork and /proc")


@pytest.fixture(autouse=True)
def one_thread():
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("stores") / "plain.h5")


def _fit(store, C: float):
    split, _ = store.split_assignment()
    X, y = store.features, store.labels
    rows = training_rows(store.ids, y, split, None, 0)
    model, _ = select_and_fit("logreg", (X[rows["train"]], y[rows["train"]]), (X[rows["val"]], y[rows["val"]]),
                              (X[rows["refit"]], y[rows["refit"]]), params={"C": C})
    return model


def _manifest(store, C: float) -> dict:
    return {"head": "logreg", "params": {"C": C}, "backbone": store.config["backbone"], "store_id": store.store_id,
            "dim": store.dim, "class_names": list(store.class_names), "data_config": store.config["data_config"]}


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _leftovers(root: Path) -> list[str]:
    """Temporary files or folders and lock files a failed or killed write must not leave."""
    return [str(p) for p in root.rglob("*") if p.name.startswith(".") or p.name.endswith((".tmp", ".lock"))]


# -- kill points ----------------------------------------------------------------------


def _kill_before_step(n: int, exchange: bool, action) -> int:
    """Run ``action`` in a forked child that SIGKILLs itself before its ``n``-th file-system step.

    Returns how many steps the child took (it exits 0 when there were fewer than ``n``).
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: count steps, die at the n-th
        os.close(read)
        steps = [0]

        def step(fn):
            def wrapped(*args, **kwargs):
                steps[0] += 1
                if steps[0] == n:
                    os.kill(os.getpid(), signal.SIGKILL)
                return fn(*args, **kwargs)
            return wrapped

        try:
            os.replace, os.fsync, shutil.rmtree = step(os.replace), step(os.fsync), step(shutil.rmtree)
            featx_io._exchange = step(featx_io._exchange if exchange else (lambda a, b: False))
            action()
            os.write(write, str(steps[0]).encode())
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        taken = pipe.read()
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    return -1 if killed else int(taken or 0)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
def test_a_kill_at_any_step_of_a_head_save_leaves_the_old_or_the_new_head(store, tmp_path, exchange):
    old_model, new_model = _fit(store, 1e-3), _fit(store, 10.0)
    X = store.features
    old_pred, new_pred = old_model.predict_proba(X), new_model.predict_proba(X)
    assert not np.allclose(old_pred, new_pred)
    head = tmp_path / "heads" / "logreg"
    n, outcomes = 1, set()
    while True:
        shutil.rmtree(tmp_path / "heads", ignore_errors=True)
        save_head(head, old_model, _manifest(store, 1e-3))
        taken = _kill_before_step(n, exchange, lambda: save_head(head, new_model, _manifest(store, 10.0)))
        loaded = load_head(head)  # recovers a previous head a kill left aside
        pred = loaded.predict_proba(X)
        which = "old" if np.array_equal(pred, old_pred) else "new" if np.array_equal(pred, new_pred) else "mixed"
        assert which != "mixed" and loaded.manifest["params"]["C"] == (1e-3 if which == "old" else 10.0), (n, which)
        outcomes.add(which)
        save_head(head, new_model, _manifest(store, 10.0))  # a later save cleans whatever the kill left
        assert not _leftovers(tmp_path / "heads"), (n, _leftovers(tmp_path / "heads"))
        if taken >= 0:  # the child finished: every step has been a kill point
            assert taken == n - 1 and which == "new"
            break
        n += 1
    assert outcomes == {"old", "new"} and n > 4


def test_a_kill_anywhere_in_train_never_leaves_a_head_that_evaluate_scores_wrongly(store, tmp_path):
    out = tmp_path / "run"
    first = train_heads(store, heads=["logreg"], params={"logreg": {"C": 1e-5}}, out=out, n_boot=50)[0]
    second = train_heads(store, heads=["logreg"], params={"logreg": {"C": 0.01}}, out=tmp_path / "new", n_boot=50)[0]
    assert first["accuracy"] != second["accuracy"]
    baseline = _tree(out)
    n = 1
    while True:
        shutil.rmtree(out)
        out.mkdir()
        for name, data in baseline.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(data)
        taken = _kill_before_step(n, True, lambda: train_heads(store, heads=["logreg"], params={"logreg": {"C": 0.01}},
                                                               out=out, n_boot=50))
        head = load_head(out / "logreg")
        entry = evaluate_head(out / "logreg", store, n_boot=50)
        # The score always belongs to the model the manifest describes, old or new, never a mix.
        assert entry["accuracy"] == (first if head.manifest["params"]["C"] == 1e-5 else second)["accuracy"], n
        for name in ("results.json", "splits.json"):
            json.loads((out / name).read_text())  # every results file is complete, old or new
        if taken >= 0:
            break
        n += 1
    assert n > 8


def test_a_new_model_file_under_an_old_manifest_is_refused(store, tmp_path):
    save_head(tmp_path / "old", _fit(store, 1e-3), _manifest(store, 1e-3))
    save_head(tmp_path / "new", _fit(store, 10.0), _manifest(store, 10.0))
    shutil.copy(tmp_path / "new" / "model.skops", tmp_path / "old" / "model.skops")
    with pytest.raises(StoreDamagedError, match="sha256 mismatch"):
        load_head(tmp_path / "old")
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(tmp_path / "old"), "--features", str(store.path)])
    assert result.exit_code == 1 and "sha256 mismatch" in result.output and "Traceback" not in result.output


# -- damaged and tampered heads ---------------------------------------------------


def _edit_manifest(change, rehash: bool):
    def edit(head: Path) -> None:
        doc = json.loads((head / "manifest.json").read_text())
        doc = change(doc)
        if rehash and isinstance(doc, dict):
            for key in ("sha256", "manifest_sha256", "model_classes", "featx_model_format", "kind", "steps"):
                doc.pop(key, None)
            doc["featx_head_format"] = 1  # as a head saved before hashes existed
        (head / "manifest.json").write_text(json.dumps(doc))
    return edit


def _drop(key):
    return lambda d: {k: v for k, v in d.items() if k != key}


def _set(key, value):
    return lambda d: {**d, key: value}


def _truncate(name):
    return lambda head: (head / name).write_bytes((head / name).read_bytes()[: (head / name).stat().st_size // 2])


def _flip(name):
    def flip(head: Path) -> None:
        data = bytearray((head / name).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (head / name).write_bytes(bytes(data))
    return flip


DAMAGE = {
    "truncated model": (_truncate("model.skops"), "sha256 mismatch"),
    "flipped byte": (_flip("model.skops"), "sha256 mismatch"),
    "missing model": (lambda h: (h / "model.skops").unlink(), "model file model.skops is missing"),
    "manifest not JSON": (lambda h: (h / "manifest.json").write_text("{not json"), "not valid JSON"),
    "manifest a list": (lambda h: (h / "manifest.json").write_text("[1, 2]"), "not an object"),
    "empty manifest": (lambda h: (h / "manifest.json").write_bytes(b""), "not valid JSON"),
    "class names reordered": (_edit_manifest(lambda d: {**d, "class_names": d["class_names"][::-1]}, False),
                              "changed after the head was saved"),
    "pooling changed": (_edit_manifest(lambda d: {**d, "backbone": {**d["backbone"], "pooling": "max"}}, False),
                        "changed after the head was saved"),
    "extra class name": (_edit_manifest(lambda d: {**d, "class_names": [*d["class_names"], "yak"]}, False),
                         "changed after the head was saved"),
    "no backbone": (_edit_manifest(_drop("backbone"), False), "'backbone' is missing"),
    "no data_config": (_edit_manifest(_drop("data_config"), False), "'data_config' is missing"),
    "no class_names": (_edit_manifest(_drop("class_names"), False), "'class_names' is missing"),
    "dim a string": (_edit_manifest(_set("dim", "16"), False), "'dim' must be a whole number"),
    "backbone a string": (_edit_manifest(_set("backbone", "resnet"), False), "'backbone' must be an object"),
    "format a bool": (_edit_manifest(_set("featx_head_format", True), False), "'featx_head_format' must be"),
    # Heads saved before hashes: no manifest hash to check, the schema and class count still hold.
    "old head, extra class name": (_edit_manifest(lambda d: {**d, "class_names": [*d["class_names"], "yak"]}, True),
                                   "model predicts 3 classes but the manifest names 4"),
    "old head, dim missing": (_edit_manifest(_drop("dim"), True), "'dim' is missing"),
    # A format that carries hashes must have them: deleting the line does not turn the check off.
    "manifest_sha256 deleted": (_edit_manifest(lambda d: {**_drop("manifest_sha256")(d),
                                                          "class_names": d["class_names"][::-1]}, False),
                                "carries 'manifest_sha256' but it is missing"),
    "format-2 head, manifest_sha256 deleted": (
        _edit_manifest(lambda d: {**{k: v for k, v in d.items() if k not in ("manifest_sha256", "featx_model_format")},
                                  "featx_head_format": 2}, False), "format 2 carries 'manifest_sha256'"),
}


@pytest.fixture(scope="module")
def saved(store, tmp_path_factory):
    root = tmp_path_factory.mktemp("saved")
    save_head(root / "logreg", _fit(store, 1.0), _manifest(store, 1.0))
    return root / "logreg"


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_or_tampered_heads_are_refused_in_one_line(saved, store, tmp_path, case):
    damage, message = DAMAGE[case]
    head = tmp_path / "logreg"
    shutil.copytree(saved, head)
    damage(head)
    with pytest.raises(StoreDamagedError, match=message):
        load_head(head)
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(head), "--features", str(store.path)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_heads_saved_before_hashes_still_load(saved, store, tmp_path):
    head = tmp_path / "logreg"
    shutil.copytree(saved, head)
    _edit_manifest(lambda d: d, True)(head)
    assert "manifest_sha256" not in json.loads((head / "manifest.json").read_text())
    X = store.features
    np.testing.assert_array_equal(load_head(head).predict_proba(X), load_head(saved).predict_proba(X))


def test_a_truncated_xgboost_head_is_refused(store, tmp_path):
    out = tmp_path / "run"
    train_heads(store, heads=["xgboost"], params={"xgboost": {"pca": 4, "n_estimators": 10}}, out=out, n_boot=50)
    _truncate("model.ubj")(out / "xgboost")
    with pytest.raises(StoreDamagedError, match="model.ubj is not the file"):
        load_head(out / "xgboost")


def test_the_manifest_hash_ignores_formatting_but_not_meaning(saved):
    doc = json.loads((saved / "manifest.json").read_text())
    assert manifest_digest(doc) == doc["manifest_sha256"]
    assert manifest_digest({**doc, "saved": "another time"}) == doc["manifest_sha256"]
    assert manifest_digest({**doc, "class_names": doc["class_names"][::-1]}) != doc["manifest_sha256"]


# -- full disks ---------------------------------------------------------------------


def _fail_writes(monkeypatch, target: str, err: int = errno.ENOSPC, nth: int = 1) -> None:
    """``os.fsync`` raises ``err`` for the ``nth`` write of a file whose name contains ``target``."""
    real, seen = os.fsync, [0]

    def fsync(fd):
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if target in name:
            seen[0] += 1
            if seen[0] == nth:
                raise OSError(err, os.strerror(err))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


TRAIN_WRITES = ["splits.json", "model.skops", "manifest.json", "result.json", "results.json", "results.csv",
                "results.md", "config.json"]


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    train_heads(store, heads=["logreg"], params={"logreg": {"C": 1e-3}}, out=out, n_boot=50)
    return out


@pytest.mark.parametrize("target", TRAIN_WRITES)
@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO], ids=["ENOSPC", "EIO"])
def test_a_full_disk_while_training_is_one_line_and_keeps_the_earlier_outputs(trained, store, tmp_path, monkeypatch,
                                                                              target, err):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    before = _tree(out)
    _fail_writes(monkeypatch, target, err)
    result = CliRunner().invoke(cli, ["train", "--features", str(store.path), "--heads", "logreg", "--param",
                                      "logreg.C=10", "--out", str(out), "--bootstrap", "100", "-q"])
    assert result.exit_code == 1, result.output
    reason = "no space left on device" if err == errno.ENOSPC else "input/output error"
    line = result.output.strip().splitlines()[-1]
    # A head is written as a whole, its results row (result.json) inside.
    named = "logreg" if target in ("model.skops", "manifest.json", "result.json") else target
    assert line.startswith(f"featx: error: {reason} while writing") and named in line, result.output
    assert "Traceback" not in result.output
    assert not _leftovers(out), _leftovers(out)
    after = _tree(out)
    for name, data in after.items():
        if target in Path(name).name or "logreg" in name and target in ("model.skops", "manifest.json"):
            assert data == before[name], name  # the file being written is the earlier one, byte for byte
    load_head(out / "logreg")  # the head in place is complete


def test_a_full_disk_while_writing_the_report_keeps_the_earlier_report(trained, tmp_path, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    write_report(out)
    before = _tree(out)
    for target in ("best.png", "report.html"):
        monkeypatch.undo()
        # An unchanged plot is reused, not redrawn: make the report redraw it, so the write is tried.
        monkeypatch.setattr("featx.pipeline._report_plots._recorded_key", lambda path: None)
        _fail_writes(monkeypatch, target)
        with pytest.raises(DiskError, match=f"no space left on device while writing .*{target}"):
            write_report(out)
        assert (out / target).read_bytes() == before[target]
        assert not _leftovers(out), _leftovers(out)


@pytest.fixture(scope="module")
def tiny_source():
    rng = np.random.default_rng(0)
    labels = np.arange(36) % 3
    images = rng.integers(0, 120, (36, 32, 32, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, ..., label] = 255
    return ArraySource(images, labels, class_names=["r", "g", "b"])


FT = {"mode": "linear", "image_size": 32, "batch_size": 8, "workers": 0, "n_boot": 50, "quiet": True, "device": "cpu",
      "patience": 5}


@pytest.mark.parametrize("target,nth", [("last.pt", 2), ("best.safetensors", 1), ("results.json", 1)])
def test_a_full_disk_while_fine_tuning_is_one_line_and_resumable(tiny_source, tmp_path, monkeypatch, target, nth):
    spec = resolve_backbone("test_efficientnet", weights="random")
    out = tmp_path / "ft"
    _fail_writes(monkeypatch, target, nth=nth)
    with pytest.raises(DiskError, match=f"no space left on device while writing .*{target}"):
        finetune(tiny_source, spec, out, epochs=2, **FT)
    assert not _leftovers(out), _leftovers(out)
    if target == "last.pt":  # the checkpoint of the last completed epoch is intact
        assert torch.load(out / "last.pt", weights_only=True)["state"]["epoch"] == 1
    monkeypatch.undo()
    entry = finetune(tiny_source, spec, out, epochs=2, **FT)  # the same command resumes and finishes
    assert entry["epochs_run"] == 2 and json.loads((out / "results.json").read_text())[0]["epochs_run"] == 2


# -- tiny data ------------------------------------------------------------------------


def _labelled_store(path: Path, labels, class_names=("ant", "bee", "cow"), dim: int = 8, splits=None) -> FeatureStore:
    rng = np.random.default_rng(0)
    labels = np.asarray(labels)
    X = rng.normal(size=(len(labels), dim)).astype(np.float32) + labels[:, None]
    spec = resolve_backbone("test_efficientnet", weights="random")
    config = {"source": {"kind": "array", "name": path.stem}, "backbone": spec.identity(),
              "data_config": {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3}, "precision": "fp32",
              "dtype": "float32"}
    writer = StoreWriter.create(path, config=config, fingerprint=f"tiny-{len(labels)}", ids=[f"i{i}" for i in range(len(labels))],
                                labels=labels, splits=splits or [""] * len(labels), class_names=class_names, dim=dim, dtype="float32")
    try:
        writer.write_batch(0, X, [None] * len(labels))
        writer.finish({"device": "cpu"})
    finally:
        writer.close()
    return FeatureStore(path)


def test_one_usable_class_is_one_line(tmp_path):
    one = _labelled_store(tmp_path / "one.h5", [0] * 30, class_names=("ant", "bee"))
    with pytest.raises(FeatxError, match="only 1 class with usable training items \\('ant'\\)"):
        train_heads(one, heads=["logreg"], out=tmp_path / "out")
    result = CliRunner().invoke(cli, ["train", "--features", str(one.path), "--out", str(tmp_path / "out2"), "-q"])
    assert result.exit_code == 1 and "only 1 class" in result.output and "Traceback" not in result.output


def test_heads_adapt_to_tiny_classes_and_an_unfit_head_is_a_skipped_row(store, tmp_path, capsys):
    out = tmp_path / "run"
    entries = train_heads(store, heads=["logreg", "knn", "linear_svm"], per_class=1, out=out, n_boot=50,
                          params={"knn": {"pca": 2}})
    by_head = {e["head"]: e for e in entries}
    assert by_head["logreg"]["accuracy"] is not None
    knn = by_head["knn"]
    assert all(c["params"]["n_neighbors"] <= 3 for c in knn["selection"]["candidates"])  # k <= 3 training items
    assert "error" not in json.dumps(knn["selection"]["candidates"])
    assert "calibration needs at least 2" in by_head["linear_svm"]["skipped"]
    assert not (out / "linear_svm").exists() and load_head(out / "knn").name == "knn"
    rows = (out / "results.csv").read_text()
    assert "linear_svm" in rows and "skipped" in rows
    assert "linear_svm skipped" in capsys.readouterr().err
    write_report(out)  # a report still builds, from the heads that were fitted
    assert {e["head"] for e in json.loads((out / "results.json").read_text())} == {"logreg", "knn", "linear_svm"}


def test_a_class_without_training_items_skips_xgboost_and_keeps_the_others_honest(tmp_path):
    labels = [0] * 30 + [1] * 30 + [2] * 10  # 'cow' only in the test split
    splits = (["train"] * 20 + ["val"] * 5 + ["test"] * 5) * 2 + ["test"] * 10
    lopsided = _labelled_store(tmp_path / "lopsided.h5", labels, splits=splits)
    entries = train_heads(lopsided, heads=["logreg", "xgboost"], params={"xgboost": {"pca": None, "n_estimators": 10}},
                          out=tmp_path / "run", n_boot=50)
    assert entries[0]["accuracy"] is not None and "XGBoostError" in entries[1]["skipped"]
    head = load_head(tmp_path / "run" / "logreg")
    assert head.proba_names == ["ant", "bee"] and head.predict_proba(lopsided.features).shape[1] == 2


def test_linear_svm_calibrates_with_fewer_folds_on_small_classes(store):
    entries = train_heads(store, heads=["linear_svm"], per_class=2, n_boot=50)
    assert entries[0]["params"]["calibration_folds"] == 2
    assert entries[0]["selection"]["capped"] == {"calibration_folds": {"asked": 3, "used": 2}}


def test_per_class_larger_than_a_class_warns_with_what_was_used(store, tmp_path):
    result = CliRunner().invoke(cli, ["train", "--features", str(store.path), "--per-class", "500", "--out",
                                      str(tmp_path / "run"), "--bootstrap", "100", "-q"])
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if line.startswith("featx: warning: --per-class 500")]
    n_train = json.loads((tmp_path / "run" / "results.json").read_text())[0]["n_train"]
    assert len(warning) == 1 and f"{n_train} training items in all" in warning[0], result.output


def test_every_head_unfit_is_an_error_not_a_success(store, tmp_path):
    with pytest.raises(FeatxError, match="no head could be fitted on this data: linear_svm: probability calibration"):
        train_heads(store, heads=["linear_svm"], per_class=1, out=tmp_path / "run", n_boot=50)


# -- Ctrl-C -------------------------------------------------------------------------

_INTERRUPT_AT_FORK = {"armed": False}


def _interrupt_after_fork() -> None:
    # Runs inside os.fork's after-fork hook in the parent: Python swallows exceptions
    # raised here ("Exception ignored in ..."), exactly where Ctrl-C used to get lost.
    if _INTERRUPT_AT_FORK["armed"]:
        _INTERRUPT_AT_FORK["armed"] = False
        os.kill(os.getpid(), signal.SIGINT)


os.register_at_fork(after_in_parent=_interrupt_after_fork)


@pytest.fixture(autouse=True)
def default_ctrl_c():
    """Python's own SIGINT handler, as in a terminal: a shell starts background jobs (and so,
    perhaps, this test run) with SIGINT ignored, and featx rightly leaves an ignored SIGINT alone."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def interrupt_at_next_worker_start():
    yield _INTERRUPT_AT_FORK
    _INTERRUPT_AT_FORK["armed"] = False


def test_ctrl_c_while_an_epoch_starts_its_workers_stops_the_run_and_it_resumes(tiny_source, tmp_path,
                                                                             interrupt_at_next_worker_start):
    spec = resolve_backbone("test_efficientnet", weights="random")
    out, options = tmp_path / "ft", {**FT, "workers": 1}

    def arm_after_first_epoch(record):
        interrupt_at_next_worker_start["armed"] = record["epoch"] == 1  # fires as epoch 2's workers start

    with pytest.raises(KeyboardInterrupt):
        finetune(tiny_source, spec, out, epochs=3, callback=arm_after_first_epoch, **options)
    assert torch.load(out / "last.pt", weights_only=True)["state"]["epoch"] == 1
    assert not (out / "results.json").exists() and not _leftovers(out)
    entry = finetune(tiny_source, spec, out, epochs=3, **options)
    assert entry["epochs_run"] == 3


def test_ctrl_c_swallowed_at_worker_start_exits_130_from_the_cli(tmp_path, interrupt_at_next_worker_start):
    from tests.conftest import write_image_folder

    folder = write_image_folder(tmp_path / "images", n_per_class=6, classes=("a", "b", "c"), size=(32, 32))
    interrupt_at_next_worker_start["armed"] = True  # the first fork is epoch 1's DataLoader worker
    result = CliRunner().invoke(cli, ["finetune", "--source", str(folder), "--backbone", "test_efficientnet", "--weights",
                                      "random", "--mode", "linear", "--epochs", "2", "--image-size", "32",
                                      "--batch-size", "8", "--workers", "1", "--device", "cpu", "--out",
                                      str(tmp_path / "ft"), "-q"])
    assert not interrupt_at_next_worker_start["armed"], "the run never started a worker"
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.output and not (tmp_path / "ft" / "results.json").exists()



def test_an_interrupt_swallowed_by_a_destructor_is_raised_again_at_the_next_check():
    from featx.core.interrupts import check_interrupt, sticky_interrupts

    class SwallowsInDel:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # KeyboardInterrupt raised inside __del__: Python ignores it

    reached = []
    with pytest.raises(KeyboardInterrupt), sticky_interrupts():
        SwallowsInDel()
        reached.append("after the swallowed interrupt")
        check_interrupt()
        reached.append("after the check")
    assert reached == ["after the swallowed interrupt"]
    with sticky_interrupts():  # the record is forgotten once it has stopped the block
        check_interrupt()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_interrupt_wins_over_the_error_it_caused():
    from featx.core.interrupts import sticky_interrupts

    class SwallowsInDel:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt), sticky_interrupts():
        SwallowsInDel()
        raise RuntimeError("DataLoader worker exited unexpectedly")  # e.g. the worker got the same Ctrl-C
