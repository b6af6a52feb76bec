"""The fine-tune baseline: the same backbone, splits and metrics as the heads, trained end to end.

Modes (``mode=``):

* ``linear``: only a fresh classifier trains; the whole network is frozen.
* ``partial``: the classifier and the last ``unfreeze`` stages train. A stage is one
  coarse group of timm's ``model.group_matcher(coarse=True)``: for EfficientNet and
  MobileNet one ``blocks[i]`` (the blocks of one resolution and width), the last one
  together with ``conv_head``/``bn2``; for a ViT one transformer block (the last with
  the final norm); for a ResNet one ``layerN``. The stem is the first stage.
* ``full``: every layer trains. The first ``head_epochs`` train the classifier alone
  (while the learning rate warms up), then the body joins with layer-wise
  learning-rate decay (timm's ``layer_decay``: each layer's rate is
  ``layer_decay ** depth_from_top`` times the classifier's).
* ``scratch``: ``full`` from random initialisation, the same architecture and the same
  data config (normalisation, input size) as the pretrained model: the control that
  measures what transfer buys. There is no head-only phase and no layer decay.

Frozen means frozen, BatchNorm included. ``model.train()`` would let every BatchNorm
update its running mean/var (and dropout/drop-path act) even where no gradient
flows, so after each ``model.train()`` :func:`keep_frozen_in_eval` puts back in eval
mode every sub-module that has parameters and none of them trainable (recursively,
so the BatchNorm layers and drop-path inside it are in eval mode too). A frozen
block is therefore exactly the feature extractor the heads saw.

Training: AdamW (timm's ``create_optimizer_v2``, no weight decay on biases and norms),
linear warm-up then cosine decay per step (timm's ``CosineLRScheduler``), label
smoothing 0.1, bf16 autocast and channels_last on CUDA, early stopping on validation
macro-F1 with ``patience``. The best epoch's weights are saved as
``best.safetensors`` (+ ``best.json``), and once the run is tested, as a loadable model
directory ``model/`` (:mod:`._model`); ``last.pt`` holds model, optimizer, scheduler
and counters after every epoch, and a rerun with ``resume=True`` continues after the
last completed epoch. Each epoch reseeds from ``(seed, epoch)``, so a resumed run
matches an uninterrupted one. Test metrics come from the best weights, on the test
split with the eval transform, through the heads' :func:`classification_metrics`
(the bootstrap seeded like the heads' first seed). In ``linear`` mode the frozen
body gives each validation image the same pooled pre-logits in every epoch, so they
are computed once and only the classifier runs on them after the first epoch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.bars import progress_bar
from ..core.errors import FeatxError, FeatxUsageError
from ..core.interrupts import check_interrupt
from ..core.io import json_text, write_atomic
from ..core.metrics import classification_metrics
from ..core.predictions import prediction_record
from ..core.results import merge_results, metric_fields
from ..core.runtime import autocast_context, library_versions, resolve_device, resolve_precision, tune_malloc
from ..data import SPLITS_FILE, Source, open_source, save_splits, splits_digest
from ..extraction import (
    BackboneSpec,
    create_backbone,
    jsonable_data_config,
    resolve_backbone,
    resolve_workers,
)
from ._augment import DeviceAugment, make_train_resize
from ._data import (
    epoch_seed,
    predict,
    seed_everything,
    select_items,
    train_loader,
)
from ._model import save_finetuned, save_finished_run
from ._modes import DEFAULT_LR, MODES

__all__ = ["run_finetune", "training_precision", "model_stages", "set_trainable", "keep_frozen_in_eval"]

CONFIG_FILE, LAST_FILE, BEST_FILE = "config.json", "last.pt", "best.safetensors"


def model_stages(model: nn.Module) -> list[list[str]]:
    """Parameter names of each stage, input to output, the classifier's own excluded."""
    from timm.models import group_parameters

    head = {id(p) for p in model.get_classifier().parameters()}
    params = dict(model.named_parameters())
    stages: list[list[str]] = []
    for names in group_parameters(model, model.group_matcher(coarse=True)).values():
        body = [n for n in names if id(params[n]) not in head]
        if len(body) < len(names) and stages:
            # What shares the classifier's group (ConvNeXt's head norm) is not a stage of
            # its own: it trains with the last one.
            stages[-1].extend(body)
        elif body:
            stages.append(body)
    return stages


def _stage_label(names: list[str]) -> str:
    labels = []
    for name in names:
        parts = name.split(".")
        label = ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]
        if label not in labels:
            labels.append(label)
    return "+".join(labels)


def set_trainable(model: nn.Module, mode: str, unfreeze: int = 1) -> list[str]:
    """Set ``requires_grad`` for ``mode``; return labels of the trainable stages (classifier excluded)."""
    stages = model_stages(model)
    if mode in ("full", "scratch"):
        model.requires_grad_(True)
        return [_stage_label(s) for s in stages]
    model.requires_grad_(False)
    model.get_classifier().requires_grad_(True)
    if mode == "linear":
        return []
    if mode != "partial":
        raise FeatxUsageError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if not 1 <= unfreeze <= len(stages):
        raise FeatxUsageError(f"--unfreeze {unfreeze}: {type(model).__name__} has {len(stages)} stages; give 1 to {len(stages)}")
    params = dict(model.named_parameters())
    for names in stages[-unfreeze:]:
        for name in names:
            params[name].requires_grad_(True)
    return [_stage_label(s) for s in stages[-unfreeze:]]


def keep_frozen_in_eval(model: nn.Module) -> None:
    """After ``model.train()``: put every sub-module with parameters, none trainable, back in eval mode."""
    for module in model.modules():
        flags = [p.requires_grad for p in module.parameters()]
        if flags and not any(flags):
            module.eval()


def _pretrained_data_config(spec: BackboneSpec) -> dict:
    """The data config the pretrained model of ``spec`` uses, read without loading any weights."""
    import timm

    kwargs = dict(spec.model_kwargs)
    if spec.offline is not None:
        kwargs["pretrained_cfg_overlay"] = spec.offline.overlay()
    elif spec.weights_kind == "hub" and spec.hub_tag:
        kwargs["pretrained_cfg"] = spec.hub_tag
    return timm.data.resolve_model_data_config(timm.create_model(spec.model, pretrained=False, **kwargs))


def _build_model(spec: BackboneSpec, mode: str, num_classes: int, image_size: int | None) -> tuple[nn.Module, dict, dict]:
    """(model, data config, weights record for the results entry)."""
    if mode == "scratch":
        data_config = _pretrained_data_config(spec)
        random_spec = dataclasses.replace(spec, weights_kind="random", weights_path=None, weights_sha256=None)
        model, _ = create_backbone(random_spec, num_classes=num_classes, frozen=False)
        weights = {"kind": "random", "data_config_from": spec.identity()["weights"]}
    else:
        model, data_config = create_backbone(spec, num_classes=num_classes, frozen=False)
        weights = spec.identity()["weights"]
    data_config = dict(data_config)
    if image_size is not None:
        data_config["input_size"] = (data_config["input_size"][0], int(image_size), int(image_size))
    return model, data_config, weights


def _write_json(path: Path, doc) -> None:
    write_atomic(path, json_text(doc))


def _canonical(config: dict) -> dict:
    return json.loads(json_text(config))


def save_results_entry(out: Path, entry: dict) -> None:
    """Write ``<out>/finetune_<mode>.json`` and merge the entry into ``<out>/results.json`` as ``featx train`` does."""
    merge_results(out, [entry])
    # Written last: its presence marks the run finished, so a failure above leaves it to be redone.
    _write_json(out / f"finetune_{entry['mode']}.json", entry)


def _check_out_dir(out: Path, config: dict, resume: bool, mode: str) -> dict | None:
    """Return the finished entry to reuse, or None to train; refuse a directory of another config."""
    config_path = out / CONFIG_FILE
    if not resume:
        for name in (CONFIG_FILE, LAST_FILE, BEST_FILE, "best.json", f"finetune_{mode}.json"):
            (out / name).unlink(missing_ok=True)
        return None
    if not config_path.exists():
        return None
    old = json.loads(config_path.read_text())
    if old != _canonical(config):
        from ..store import diff_configs

        diff = diff_configs(old, _canonical(config))
        raise FeatxUsageError(
            f"{out} holds a fine-tune with another config ({'; '.join(diff[:4])}); "
            "use --no-resume to replace it, or another --out"
        )
    entry_path = out / f"finetune_{mode}.json"
    return json.loads(entry_path.read_text()) if entry_path.exists() else None


def _steps_per_epoch(n_train: int, batch_size: int) -> int:
    steps = math.ceil(n_train / batch_size)
    return steps - 1 if steps > 1 and n_train % batch_size == 1 else steps


def _format_eta(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{secs:02d}s"


def run_finetune(source, backbone, out, *, mode, weights, pooling, epochs, per_class, seed, val_per_class, unfreeze,
              batch_size, lr, weight_decay, layer_decay, label_smoothing, warmup_epochs, head_epochs, patience,
              image_size, crop_scale, splits, split_seed, val_fraction, test_fraction, device, precision, workers,
              eval_batch_size, n_boot, resume, quiet, callback) -> dict:
    _check_options(mode, epochs=epochs, batch_size=batch_size, patience=patience, unfreeze=unfreeze,
                   workers=workers if isinstance(workers, int) else 0, head_epochs=head_epochs,
                   per_class=per_class, val_per_class=val_per_class, image_size=image_size)
    lr = DEFAULT_LR[mode] if lr is None else float(lr)
    head_epochs = head_epochs if mode == "full" else 0
    src = open_source(source)
    spec = backbone if isinstance(backbone, BackboneSpec) else resolve_backbone(backbone, weights=weights, pooling=pooling)
    prec = training_precision(precision, dev := resolve_device(device))
    workers = resolve_workers(workers, dev)  # "auto": in-process decoding on a 2-core CPU run
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = select_items(src, per_class=per_class, seed=seed, val_per_class=val_per_class, splits_file=splits,
                        split_seed=split_seed, val_fraction=val_fraction, test_fraction=test_fraction)
    seed_everything(seed)  # the new classifier (and in scratch mode every layer) is initialised from it
    model, data_config, weights_record = _build_model(spec, mode, len(src.class_names), image_size)
    options = _options(mode, data_config, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                       layer_decay=layer_decay, unfreeze=unfreeze, label_smoothing=label_smoothing,
                       warmup_epochs=warmup_epochs, head_epochs=head_epochs, patience=patience, crop_scale=crop_scale,
                       precision=prec, seed=seed, per_class=per_class, val_per_class=val_per_class, image_size=image_size)
    config = _run_config(src, spec, weights_record, options, data_config, data)
    finished = _check_out_dir(out, config, resume, mode)
    if finished is not None:
        if save_finished_run(out, out / BEST_FILE, model, spec, weights_record, data_config, src.class_names, finished):
            save_results_entry(out, finished)
        if not quiet:
            print(f"featx: {out} already holds the finished {finished['head']} run; returning it", file=sys.stderr)
        return finished
    _write_json(out / CONFIG_FILE, config)
    save_splits(out / SPLITS_FILE, src.ids, data.splits, data.rule)

    trainer = _Trainer(model, mode, unfreeze, head_epochs, lr, weight_decay, layer_decay, label_smoothing,
                       warmup_epochs, epochs, _steps_per_epoch(len(data.train), batch_size))
    run = _Run(out=out, config=config, model=model, data=data, data_config=data_config, trainer=trainer,
               loop=_device_settings(model, dev, prec, eval_batch_size or batch_size, workers))
    state = _initial_state(run, resume, quiet)
    _train_epochs(run, state, seed=seed, epochs=epochs, patience=patience, batch_size=batch_size, workers=workers,
                  crop_scale=crop_scale, quiet=quiet, callback=callback)
    entry = _test_entry(run, state, src, spec, weights_record, options, seed=seed, n_boot=n_boot, workers=workers)
    check_interrupt()  # never record a finished run that an interrupt was meant to stop
    save_finetuned(out, run.model, spec, weights_record, data_config, src.class_names, entry)  # row inside, first
    save_results_entry(out, entry)
    return entry


def training_precision(precision: str, dev: torch.device) -> str:
    """Training keeps bf16 as its CUDA default: fp16 gradients need loss scaling, and the
    feature drift that made fp16 the extraction default is no concern for a model in training."""
    prec = resolve_precision("bf16" if precision == "auto" and dev.type == "cuda" else precision, dev)
    if prec == "fp16":
        raise FeatxUsageError("fine-tuning runs in fp32 or bf16 (fp16 training would need loss scaling)")
    return prec


def _options(mode: str, data_config: dict, *, layer_decay, unfreeze, crop_scale, image_size, **options) -> dict:
    """The training options as recorded (and compared on resume); mode-specific ones are None elsewhere."""
    return {
        "mode": mode, **{k: options[k] for k in ("epochs", "batch_size", "lr", "weight_decay")},
        "layer_decay": layer_decay if mode == "full" else None, "unfreeze": unfreeze if mode == "partial" else None,
        **{k: options[k] for k in ("label_smoothing", "warmup_epochs", "head_epochs", "patience")},
        "crop_scale": list(crop_scale),
        **{k: options[k] for k in ("precision", "seed", "per_class", "val_per_class")},
        "input_size": list(data_config["input_size"]), "image_size_override": image_size,
    }


def _run_config(src: Source, spec: BackboneSpec, weights_record: dict, options: dict, data_config: dict, data) -> dict:
    """What identifies this run: a directory holding another config is refused, not mixed in."""
    return {
        "source": {"kind": src.kind, "name": src.name, "fingerprint": src.fingerprint()},
        "backbone": spec.identity(), "weights": weights_record, "options": options,
        "data_config": jsonable_data_config(data_config),
        "splits_digest": splits_digest(src.ids, data.splits),
    }


def _check_options(mode: str, *, per_class, val_per_class, image_size, **minimums) -> None:
    if mode not in MODES:
        raise FeatxUsageError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    lows = {"epochs": 1, "batch_size": 2, "patience": 1, "unfreeze": 1, "workers": 0, "head_epochs": 0}
    for name, value in minimums.items():
        if value < lows[name]:
            raise FeatxUsageError(f"{name.replace('_', ' ')} must be at least {lows[name]}")
    if (per_class is not None and per_class < 1) or (val_per_class is not None and val_per_class < 1):
        raise FeatxUsageError("per_class and val_per_class must be positive numbers of images per class")
    if image_size is not None and image_size < 16:
        raise FeatxUsageError("image size must be at least 16 pixels")


@dataclasses.dataclass
class _Run:
    """What every step of one fine-tune run shares."""

    out: Path
    config: dict
    model: nn.Module
    data: object
    data_config: dict
    trainer: _Trainer
    loop: dict  # device, autocast, channels_last, batch_size, workers: the keyword arguments of predict()
    val_cache: dict | None = None


def _device_settings(model: nn.Module, dev: torch.device, prec: str, eval_batch_size: int, workers: int) -> dict:
    """Move the model to its device (channels_last on GPU) and return how batches run there."""
    tune_malloc()
    channels_last = dev.type == "cuda"
    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return {"device": dev, "autocast": autocast_context(dev, prec), "channels_last": channels_last,
            "batch_size": eval_batch_size, "workers": workers}


def _initial_state(run: _Run, resume: bool, quiet: bool) -> dict:
    """The counters after the last completed epoch (from ``last.pt``), or a fresh start."""
    state = run.trainer.load(run.out / LAST_FILE, run.config) if resume else None
    state = state or {"epoch": 0, "num_updates": 0, "best_metric": -1.0, "best_epoch": None, "bad_epochs": 0,
                      "history": [], "train_seconds": 0.0, "step_seconds": 0.0, "images_seen": 0}
    run.data.skipped.update(state.get("skipped", {}))
    # A frozen body gives each val image the same pre-logits every epoch.
    run.val_cache = {} if run.trainer.mode == "linear" else None
    if not quiet and state["epoch"]:
        print(f"featx: resuming {run.out} after epoch {state['epoch']}", file=sys.stderr)
    return state


def _train_epochs(run: _Run, state: dict, *, seed, epochs, patience, batch_size, workers, crop_scale, quiet,
                  callback) -> None:
    """Train epoch after epoch until ``epochs`` or early stopping; checkpoint after each."""
    # Workers only decode and resize to the input size (uint8); crops, flips and
    # normalisation run batched on the device (``_augment``).
    train_transform = make_train_resize(run.data_config)
    while state["epoch"] < epochs and state["bad_epochs"] < patience:
        epoch = state["epoch"]
        started = time.perf_counter()
        generator = seed_everything(epoch_seed(seed, epoch))
        loader = train_loader(run.data, train_transform, run.data_config["input_size"], batch_size, workers, generator,
                              pin_memory=run.loop["device"].type == "cuda")
        # Its own generator, seeded per (seed, epoch): the augmentations of an epoch do not
        # depend on the loader's draws nor on an interruption before it.
        augment = DeviceAugment(run.data_config, crop_scale,
                                torch.Generator().manual_seed(epoch_seed(seed, epoch) ^ 0x5EED), run.loop["device"],
                                channels_last=run.loop["channels_last"])
        # Per batch within the epoch: a bar on a terminal, a plain line every 10 s in a log.
        with progress_bar(len(loader), f"epoch {epoch + 1}/{epochs}", "batch", disable=quiet, leave=False) as bar:
            loss, n_images, step_seconds = run.trainer.train_epoch(
                epoch, loader, run.data, {**run.loop, "augment": augment, "bar": bar}, state)
        check_interrupt()  # before validation and the checkpoint: the epoch may have been cut short
        improved, val_f1 = _validate(run, state, epoch)
        seconds = time.perf_counter() - started
        record = {"epoch": epoch + 1, "train_loss": loss, "val_macro_f1": val_f1, "images_per_second":
                  round(n_images / step_seconds, 2) if step_seconds else None, "seconds": round(seconds, 3),
                  "lr": max(g["lr"] for g in run.trainer.optimizer.param_groups)}
        state["history"].append(record)
        state.update(epoch=epoch + 1, train_seconds=state["train_seconds"] + seconds,
                     step_seconds=state["step_seconds"] + step_seconds, images_seen=state["images_seen"] + n_images,
                     skipped=dict(run.data.skipped))
        run.trainer.save_last(run.out / LAST_FILE, run.config, state)
        if not quiet:
            left = (epochs - epoch - 1) * state["train_seconds"] / len(state["history"])
            print(f"epoch {epoch + 1}/{epochs}  loss {loss:.4f}  val macro-F1 {val_f1:.4f}"
                  f"{' *' if improved else '  '} (best {state['best_metric']:.4f})  "
                  f"{record['images_per_second'] or 0:.1f} img/s  ETA {_format_eta(left)}", file=sys.stderr)
        if callback is not None:
            callback(record)
    if not quiet and state["epoch"] < epochs:
        print(f"featx: early stop after epoch {state['epoch']}: val macro-F1 did not improve for {patience} epochs",
              file=sys.stderr)


def _validate(run: _Run, state: dict, epoch: int) -> tuple[bool, float]:
    """Score the epoch on val (macro-F1); keep the best epoch's weights."""
    val_idx, val_pred, _ = predict(run.model, run.data, run.data.val, run.data_config, **run.loop,
                                   cache=run.val_cache, cache_key="val")
    val_f1 = _macro_f1(run.data.labels[val_idx], val_pred)
    improved = val_f1 > state["best_metric"]
    if improved:
        run.trainer.save_best(run.out, epoch, val_f1)
        state.update(best_metric=val_f1, best_epoch=epoch + 1, bad_epochs=0)
    else:
        state["bad_epochs"] += 1
    return improved, val_f1


def _test_entry(run: _Run, state: dict, src: Source, spec: BackboneSpec, weights_record: dict, options: dict, *,
                seed: int, n_boot: int, workers: int) -> dict:
    """Evaluate the best epoch once on test; the results entry in the shape ``featx train`` writes."""
    run.trainer.load_best(run.out)
    data = run.data
    test_idx, test_pred, predict_seconds = predict(run.model, data, data.test, run.data_config, **run.loop)
    if not len(test_idx):
        raise FeatxError(f"no usable test image in {src.name}: every test item failed to load")
    metrics = classification_metrics(data.labels[test_idx], test_pred, src.class_names, n_boot=n_boot, seed=seed)
    mode = options["mode"]
    return {
        "kind": "finetune", "head": f"finetune:{mode}", "mode": mode, "backbone": spec.model, "weights": weights_record,
        "store_id": None, "dim": None, "per_class": options["per_class"], "seeds": [seed],
        "n_train": len(data.usable(data.train)), "n_val": len(data.usable(data.val)), "n_test": len(test_idx),
        "n_skipped": len(data.skipped), "skipped": [{"id": k, "reason": v} for k, v in list(data.skipped.items())[:100]],
        "splits_digest": run.config["splits_digest"], "split_rule": data.rule,
        **metric_fields(metrics),
        "seed_summary": {}, "fit_seconds": round(state["train_seconds"], 3),
        "predict_seconds_per_1k": round(predict_seconds / len(test_idx) * 1000, 3),
        "params": {**options, "trainable_stages": run.trainer.stage_labels, "trainable_params": run.trainer.n_trainable,
                   "best_epoch": state["best_epoch"], "best_val_macro_f1": state["best_metric"],
                   "device": str(run.loop["device"]), "workers": workers},
        "versions": library_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "train_seconds": round(state["train_seconds"], 3), "epochs_run": state["epoch"],
        "images_per_second": round(state["images_seen"] / state["step_seconds"], 2) if state["step_seconds"] else None,
        "history": state["history"],
        # Per-item test predictions, for paired comparisons with the other rows of a report.
        "test_predictions": prediction_record(np.asarray(src.ids)[test_idx], data.labels[test_idx], test_pred,
                                              path=run.out / f"test_predictions_{mode}.npz"),
    }


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, average="macro")) if len(y_true) else 0.0


class _Trainer:
    """Model, optimizer, schedule and checkpoints of one fine-tune run."""

    def __init__(self, model, mode, unfreeze, head_epochs, lr, weight_decay, layer_decay, label_smoothing,
                 warmup_epochs, epochs, steps_per_epoch):
        import timm.optim
        from timm.scheduler import CosineLRScheduler

        self.model, self.mode, self.unfreeze, self.head_epochs = model, mode, unfreeze, head_epochs
        self.stage_labels = set_trainable(model, mode, unfreeze)
        self.n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        # In full mode the optimizer holds every parameter from the start; during the
        # head-only epochs the body has no gradients, so AdamW leaves it untouched.
        self.optimizer = timm.optim.create_optimizer_v2(
            model, "adamw", lr=lr, weight_decay=weight_decay, layer_decay=layer_decay if mode == "full" else None)
        total = max(1, epochs * steps_per_epoch)
        warmup = min(total - 1, int(round(warmup_epochs * steps_per_epoch)))
        self.scheduler = CosineLRScheduler(
            self.optimizer, t_initial=max(1, total - warmup), lr_min=lr * 0.01, warmup_t=warmup,
            warmup_lr_init=lr * 0.01, warmup_prefix=True, t_in_epochs=False)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def train_epoch(self, epoch: int, loader, data, run: dict, state: dict) -> tuple[float, int, float]:
        """One pass over the training batches: (mean loss, images trained on, seconds in steps)."""
        model, dev = self.model, run["device"]
        if self.mode == "full":
            set_trainable(model, "linear" if epoch < self.head_epochs else "full")
        model.train()
        keep_frozen_in_eval(model)
        labels = torch.as_tensor(data.labels)
        total_loss, n_images, seconds = 0.0, 0, 0.0
        for indices, images, reasons in loader:
            check_interrupt()
            if "bar" in run:
                run["bar"].update(1)
            good = [i for i, reason in enumerate(reasons) if not reason]
            for i, reason in enumerate(reasons):
                if reason:
                    data.record_bad(int(indices[i]), reason)
            if len(good) < 2:  # BatchNorm cannot train on fewer than two images
                continue
            started = time.perf_counter()
            images, target = images[good].to(dev, non_blocking=True), labels[indices[good]].to(dev, non_blocking=True)
            images = run["augment"](images)
            with run["autocast"]:
                logits = model(images)
            loss = self.criterion(logits.float(), target)
            if not torch.isfinite(loss):
                raise FeatxError(f"training diverged at epoch {epoch + 1} (loss {loss.item()}): lower --lr")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            state["num_updates"] += 1
            self.scheduler.step_update(state["num_updates"])
            seconds += time.perf_counter() - started
            total_loss += loss.item() * len(good)
            n_images += len(good)
        return (total_loss / n_images if n_images else float("nan")), n_images, seconds

    def save_best(self, out: Path, epoch: int, metric: float) -> None:
        from safetensors.torch import save

        state = {k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}
        write_atomic(out / BEST_FILE, save(state, metadata={"epoch": str(epoch + 1)}))
        _write_json(out / "best.json", {"epoch": epoch + 1, "val_macro_f1": metric, "mode": self.mode,
                                        "format": "safetensors state dict of the whole model (timm names)"})

    def load_best(self, out: Path) -> None:
        from safetensors.torch import load_file

        if (out / BEST_FILE).exists():
            self.model.load_state_dict(load_file(str(out / BEST_FILE), device="cpu"))

    def save_last(self, path: Path, config: dict, state: dict) -> None:
        doc = {"config_digest": _digest(config), "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
               "scheduler": self.scheduler.state_dict(), "state": state}
        buffer = io.BytesIO()
        torch.save(doc, buffer)
        write_atomic(path, buffer.getvalue())

    def load(self, path: Path, config: dict) -> dict | None:
        if not path.exists():
            return None
        try:
            doc = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a torn or foreign file: say so, do not guess
            raise FeatxError(f"cannot read checkpoint {path} ({type(exc).__name__}); use --no-resume to start over") from None
        if doc.get("config_digest") != _digest(config):
            raise FeatxUsageError(f"{path} was written for another config; use --no-resume or another --out")
        self.model.load_state_dict(doc["model"])
        self.optimizer.load_state_dict(doc["optimizer"])
        self.scheduler.load_state_dict(doc["scheduler"])
        self.scheduler.step_update(doc["state"]["num_updates"])
        return doc["state"]


def _digest(config: dict) -> str:
    return hashlib.sha256(json.dumps(_canonical(config), sort_keys=True).encode()).hexdigest()
