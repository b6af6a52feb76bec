"""The fine-tune baseline: modes, frozen parts, resume, few-shot agreement with the heads, checkpoints.

Mechanics only: timm's tiny test models at 32 px, a couple of epochs. Every model
starts from a weights file written here, so two runs start from the same numbers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from featx import (
    ArraySource,
    FeatxUsageError,
    create_backbone,
    extract,
    finetune,
    open_source,
    resolve_backbone,
)
from featx.cli import cli
from featx.data._splits import few_shot_mask
from featx.finetuning import MODES, keep_frozen_in_eval, model_stages, set_trainable
from featx.finetuning._data import select_items

from .conftest import write_image_folder

FAST = {"image_size": 32, "batch_size": 8, "workers": 0, "n_boot": 50, "quiet": True, "device": "cpu"}


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", pretrained=False)
    path = tmp_path_factory.mktemp("weights") / "test_efficientnet.safetensors"
    # Non-trivial running statistics, as a pretrained model has.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def spec(weights_file):
    return resolve_backbone("test_efficientnet", weights=str(weights_file))


@pytest.fixture(scope="module")
def source():
    rng = np.random.default_rng(0)
    labels = np.arange(48) % 3
    images = rng.integers(0, 120, (48, 32, 32, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, ..., label] = 255
    return ArraySource(images, labels, class_names=["r", "g", "b"])


def _diff(after: dict, before: dict) -> tuple[set, set]:
    same = {k for k in after if k in before and torch.equal(after[k], before[k])}
    return same, set(after) - same


RUN = {"epochs": 2, "patience": 5, "unfreeze": 2, **FAST}


@pytest.fixture(scope="module")
def runs(spec, source, tmp_path_factory):
    """One two-epoch run per mode, shared by the tests that inspect them."""
    root = tmp_path_factory.mktemp("runs")
    return {mode: (finetune(source, spec, root / mode, mode=mode, **RUN), root / mode) for mode in MODES}


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_trains_evaluates_and_writes_a_results_entry(mode, runs, source, weights_file):
    entry, out = runs[mode]
    assert entry["kind"] == "finetune" and entry["head"] == f"finetune:{mode}" and entry["mode"] == mode
    assert entry["store_id"] is None and entry["dim"] is None and entry["seeds"] == [0]
    assert entry["epochs_run"] == 2 and len(entry["history"]) == 2 and entry["images_per_second"] > 0
    assert entry["n_train"] + entry["n_val"] + entry["n_test"] == len(source)
    assert sum(map(sum, entry["confusion_matrix"])) == entry["n_test"]
    assert 0 <= entry["accuracy_ci"][0] <= entry["accuracy"] <= entry["accuracy_ci"][1] <= 1
    assert entry["fit_seconds"] == entry["train_seconds"] > 0 and entry["predict_seconds_per_1k"] > 0
    assert json.loads((out / "results.json").read_text()) == [json.loads(json.dumps(entry))]
    assert json.loads((out / f"finetune_{mode}.json").read_text())["head"] == entry["head"]
    assert json.loads((out / "splits.json").read_text())["digest"] == entry["splits_digest"]

    same, changed = _diff(torch.load(out / "last.pt", weights_only=True)["model"], load_file(str(weights_file)))
    assert {"classifier.weight", "classifier.bias"} <= changed
    if mode in ("full", "scratch"):
        assert {"conv_stem.weight", "bn1.running_mean", "blocks.0.0.conv.weight"} <= changed
    if mode == "scratch":
        assert entry["weights"]["kind"] == "random" and entry["weights"]["data_config_from"]["kind"] == "file"


@pytest.mark.parametrize("mode", ["linear", "partial"])
def test_frozen_parameters_and_batchnorm_statistics_stay_bitwise_equal(mode, runs, weights_file):
    entry, out = runs[mode]
    last = torch.load(out / "last.pt", weights_only=True)["model"]
    frozen_prefixes = ("conv_stem.", "bn1.", "blocks.0.", "blocks.1.", "blocks.2.")
    if mode == "linear":
        frozen_prefixes += ("blocks.3.", "blocks.4.", "conv_head.", "bn2.")
    frozen = {k for k in last if k.startswith(frozen_prefixes)}
    assert any(k.endswith("running_mean") for k in frozen) and any(k.endswith("num_batches_tracked") for k in frozen)
    same, changed = _diff(last, load_file(str(weights_file)))
    assert frozen <= same
    assert changed == {k for k in last if not k.startswith(frozen_prefixes)}
    if mode == "partial":
        assert entry["params"]["trainable_stages"] == ["blocks.3", "blocks.4+conv_head+bn2"]
        # The unfrozen stages do train, their statistics included.
        assert {"blocks.4.0.bn1.running_mean", "bn2.running_var", "bn2.num_batches_tracked"} <= changed


def test_keep_frozen_in_eval_leaves_trainable_parts_training(spec):
    model, _ = create_backbone(spec, num_classes=3, frozen=False)
    set_trainable(model, "partial", unfreeze=1)
    model.train()
    keep_frozen_in_eval(model)
    assert not model.blocks[0].training and not model.bn1.training and not model.blocks[3][0].bn1.training
    assert model.blocks[4].training and model.bn2.training and model.training


def test_stages_of_a_vit_are_transformer_blocks():
    model = timm.create_model("test_vit", pretrained=False, num_classes=3)
    stages = model_stages(model)
    assert len(stages) == 1 + len(model.blocks)  # the patch embedding, then one stage per block
    assert set_trainable(model, "partial", unfreeze=2) == ["blocks.4", "blocks.5+norm"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"head.weight", "norm.weight", "blocks.4.attn.qkv.weight"} <= trainable
    assert not any(n.startswith(("blocks.3.", "patch_embed.", "pos_embed")) for n in trainable)
    with pytest.raises(FeatxUsageError, match="has 7 stages"):
        set_trainable(model, "partial", unfreeze=8)


def test_resume_after_interruption_matches_an_uninterrupted_run(runs, spec, source, tmp_path):
    options = {"mode": "full", **RUN}
    whole, whole_dir = runs["full"]

    def interrupt(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(source, spec, tmp_path / "cut", callback=interrupt, **options)
    first = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert first["state"]["epoch"] == 1 and not (tmp_path / "cut" / "results.json").exists()

    epochs_seen = []
    resumed = finetune(source, spec, tmp_path / "cut", callback=lambda r: epochs_seen.append(r["epoch"]), **options)
    assert epochs_seen == [2] and resumed["epochs_run"] == 2
    a = torch.load(whole_dir / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert a["state"]["num_updates"] == b["state"]["num_updates"] == 2 * 4
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    steps = {int(s["step"]) for s in b["optimizer"]["state"].values()}
    assert steps == {4, 8}  # the body joined after the head-only epoch; the head stepped in both
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in whole["history"]]
    assert resumed["accuracy"] == whole["accuracy"] and resumed["confusion_matrix"] == whole["confusion_matrix"]

    # A finished run is returned as it is, without training again.
    again = finetune(source, spec, tmp_path / "cut", callback=lambda r: epochs_seen.append(r["epoch"]), **options)
    assert epochs_seen == [2] and again["created"] == resumed["created"]


def test_another_config_in_the_same_directory_is_refused_unless_no_resume(runs, spec, source, tmp_path):
    import shutil

    shutil.copytree(runs["linear"][1], tmp_path, dirs_exist_ok=True)
    with pytest.raises(FeatxUsageError, match="another config.*options.batch_size: 8 -> 4.*--no-resume"):
        finetune(source, spec, tmp_path, mode="linear", **{**RUN, "batch_size": 4})
    entry = finetune(source, spec, tmp_path, mode="linear", resume=False, **{**RUN, "epochs": 1, "batch_size": 4})
    assert entry["params"]["batch_size"] == 4 and entry["epochs_run"] == 1
    assert len(json.loads((tmp_path / "results.json").read_text())) == 1


def test_few_shot_subset_and_test_set_equal_the_heads_with_bad_images(tiny_spec, tmp_path):
    root = write_image_folder(tmp_path / "images", n_per_class=14, classes=("cat", "dog"), size=(20, 20))
    for name in ("cat/000.png", "cat/003.png", "cat/007.png", "dog/002.png", "dog/011.png"):
        (root / name).write_bytes(b"")
    store = extract(root, tiny_spec, tmp_path / "store.h5", workers=0, quiet=True, batch_size=4)
    store_splits = store.split_assignment()[0]
    for seed in (0, 1, 2):
        picked = few_shot_mask(store.ids, store.labels, store_splits, 6, seed)
        data = select_items(open_source(root), per_class=6, seed=seed)
        assert sorted(np.asarray(data.source.ids)[data.train]) == sorted(store.ids[picked])
    # With these seeds the unverified draw does pick bad images, so the walk is exercised.
    assert any(select_items(open_source(root), per_class=6, seed=s).skipped for s in (0, 1, 2))

    entry = finetune(root, tiny_spec, tmp_path / "ft", mode="linear", epochs=1, per_class=6, seed=1, **FAST)
    assert entry["n_test"] == int((store_splits == "test").sum())
    assert entry["n_val"] == int((store_splits == "val").sum())
    assert entry["n_train"] == 12 and entry["per_class"] == 6
    assert entry["n_skipped"] == len({s["id"] for s in entry["skipped"]}) >= 1
    assert {s["id"] for s in entry["skipped"]} <= {s["id"] for s in store.skipped}


def test_best_checkpoint_round_trips_through_safetensors(runs, spec, source):
    from featx.extraction import make_eval_transform

    entry, tmp_path = runs["partial"]
    model, data_config = create_backbone(spec, num_classes=3, frozen=True)
    model.load_state_dict(load_file(str(tmp_path / "best.safetensors")), strict=True)
    data_config = {**data_config, "input_size": (3, 32, 32)}
    transform = make_eval_transform(data_config)
    test_ids = json.loads((tmp_path / "splits.json").read_text())["ids"]["test"]
    index = {item.id: i for i, item in enumerate(source.items)}
    rows = [index[i] for i in test_ids]
    with torch.inference_mode():
        pred = model(torch.stack([transform(source.load(i)) for i in rows])).argmax(1).numpy()
    assert float((pred == source.labels[rows]).mean()) == entry["accuracy"]
    assert json.loads((tmp_path / "best.json").read_text())["epoch"] == entry["params"]["best_epoch"]


def test_cli_finetune(tmp_path, image_folder):
    runner = CliRunner()
    args = ["finetune", "--source", str(image_folder), "--backbone", "test_efficientnet", "--weights", "random",
            "--image-size", "32", "--batch-size", "4", "--workers", "0", "--device", "cpu", "-q"]
    result = runner.invoke(cli, [*args, "--mode", "linear", "--epochs", "1", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "finetune:linear test_efficientnet: accuracy" in result.output
    assert json.loads((tmp_path / "run" / "results.json").read_text())[0]["epochs_run"] == 1

    result = runner.invoke(cli, [*args, "--mode", "partial", "--unfreeze", "99", "--out", str(tmp_path / "bad")])
    assert result.exit_code == 2 and "stages" in result.output and "Traceback" not in result.output
    result = runner.invoke(cli, [*args, "--mode", "linear", "--epochs", "2", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "--no-resume" in result.output


def test_linear_mode_validation_cache_gives_the_same_predictions(spec, source):
    from featx.finetuning._data import predict

    model, data_config = create_backbone(spec, num_classes=3, frozen=False)
    data_config = {**data_config, "input_size": (3, 32, 32)}
    set_trainable(model, "linear")
    data = select_items(source)
    run = {"device": torch.device("cpu"), "autocast": torch.autocast("cpu", enabled=False), "channels_last": False,
           "batch_size": 8, "workers": 0}
    cache: dict = {}
    first = predict(model, data, data.val, data_config, **run, cache=cache, cache_key="val")
    with torch.no_grad():
        model.get_classifier().weight.mul_(-1.0)  # a step of training changes only the classifier
    cached = predict(model, data, data.val, data_config, **run, cache=cache, cache_key="val")
    direct = predict(model, data, data.val, data_config, **run)
    assert np.array_equal(cached[0], direct[0]) and np.array_equal(cached[1], direct[1])
    assert np.array_equal(first[0], direct[0])


def test_val_per_class_keeps_a_seeded_subset_of_the_validation_split_and_never_cuts_test(source):
    whole = select_items(source)
    cut = select_items(source, val_per_class=1)
    assert set(cut.val) < set(whole.val) and sorted(source.labels[cut.val]) == [0, 1, 2]
    assert np.array_equal(cut.test, whole.test) and np.array_equal(cut.train, whole.train)
    assert np.array_equal(select_items(source, val_per_class=1, seed=5).val, cut.val)  # drawn with the split seed
