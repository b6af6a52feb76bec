"""``featx finetune``: the fine-tune baseline (and the from-scratch control) as a command."""

from __future__ import annotations

import click

from ._extract import WORKERS_HELP, IntOrAuto

__all__ = ["COMMANDS", "finetune"]


@click.command("finetune")
@click.option("--source", "source", required=True, help="Image folder, CSV manifest, WebDataset .tar shards, .parquet files or built-in name: the same source the heads used.")
@click.option("--backbone", default="efficientnet_lite0", show_default=True, help="Any timm model name.")
@click.option("--weights", default=None, help="Checkpoint file, 'hub' or 'random'. Default: offline weights when registered, else the hub. "
              "In scratch mode only the data config is taken from them.")
@click.option("--mode", default="full", show_default=True, type=click.Choice(["linear", "partial", "full", "scratch"]),
              help="linear: new head only; partial: head + last --unfreeze stages; full: everything, head warm-up and "
                   "layer-wise lr decay; scratch: full from random initialisation (control).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run directory (checkpoints, results.json).")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--per-class", default=None, type=click.IntRange(min=1), help="Few-shot: N training images per class, the same ones `featx train --per-class N` uses.")
@click.option("--val-per-class", default=None, type=click.IntRange(min=1), help="Early-stop on N validation images per class "
              "instead of the whole val split (the heads use all; a compute concession, recorded). Test is never cut.")
@click.option("--seed", default=0, show_default=True, type=int, help="Training seed (and the few-shot draw).")
@click.option("--unfreeze", default=1, show_default=True, type=click.IntRange(min=1), help="partial: number of last stages to train.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=2))
@click.option("--lr", default=None, type=click.FloatRange(min=0, min_open=True), help="Peak learning rate. Default per mode: linear 3e-3, partial 1e-3, full 5e-4, scratch 2e-3.")
@click.option("--weight-decay", default=0.05, show_default=True, type=click.FloatRange(min=0))
@click.option("--layer-decay", default=0.85, show_default=True, type=click.FloatRange(min=0, max=1, min_open=True), help="full: lr multiplier per layer below the top.")
@click.option("--warmup-epochs", default=1.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--head-epochs", default=1, show_default=True, type=click.IntRange(min=0), help="full: epochs that train the head alone first.")
@click.option("--patience", default=3, show_default=True, type=click.IntRange(min=1), help="Early stopping: epochs without a better val macro-F1.")
@click.option("--image-size", default=None, type=click.IntRange(min=16), help="Override the model's input size (recorded in the results).")
@click.option("--splits", "splits_file", default=None, type=click.Path(dir_okay=False, exists=True), help="Reuse a recorded splits.json.")
@click.option("--split-seed", default=0, show_default=True, type=int, help="Seed of the train/val/test assignment (as in featx train).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", default="auto", show_default=True, type=click.Choice(["auto", "fp32", "bf16"]), help="auto: bf16 autocast on GPU, fp32 on CPU.")
@click.option("--workers", default="auto", show_default=True, type=IntOrAuto(0), help=WORKERS_HELP)
@click.option("--resume/--no-resume", default=True, show_default=True, help="Continue an interrupted run in --out, or start over.")
@click.option("--quiet", "-q", is_flag=True, help="No per-epoch progress.")
@click.option("--allow-unlabelled", is_flag=True, help="Read SOURCE as `featx extract --allow-unlabelled` does: samples without a label are in no split (so the split matches the heads' on such a store), never trained on.")
def finetune(source, backbone, weights, mode, out, epochs, per_class, val_per_class, seed, unfreeze, batch_size, lr,
             weight_decay, layer_decay, warmup_epochs, head_epochs, patience, image_size, splits_file, split_seed,
             device, precision, workers, resume, quiet, allow_unlabelled):
    """Fine-tune BACKBONE on SOURCE with the heads' splits and metrics; write OUT/results.json."""
    from ..finetuning import finetune as run_finetune

    if allow_unlabelled:
        from ..data import open_source

        source = open_source(source, allow_unlabelled=True)
    entry = run_finetune(
        source, backbone, out, mode=mode, weights=weights, epochs=epochs, per_class=per_class,
        val_per_class=val_per_class, seed=seed, unfreeze=unfreeze, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, layer_decay=layer_decay, warmup_epochs=warmup_epochs, head_epochs=head_epochs, patience=patience, image_size=image_size,
        splits=splits_file, split_seed=split_seed, device=device, precision=precision, workers=workers,
        resume=resume, quiet=quiet,
    )
    lo, hi = entry["accuracy_ci"]
    click.echo(
        f"{entry['head']} {entry['backbone']}: accuracy {entry['accuracy']:.4f} [{lo:.4f}, {hi:.4f}], "
        f"macro-F1 {entry['macro_f1']:.4f} on {entry['n_test']} test images; {entry['n_train']} train images, "
        f"{entry['epochs_run']} epochs (best {entry['params']['best_epoch']}), {entry['train_seconds']:.0f} s, "
        f"{entry['images_per_second'] or 0:.1f} img/s"
    )
    click.echo(f"results: {out}/results.json")
    if entry.get("model"):
        from pathlib import Path

        model = Path(out) / entry["model"]
        click.echo(f"model: {model} (featx predict --model {model} IMAGES; featx export-model {model} --out FILE.onnx)")


COMMANDS = [finetune]
