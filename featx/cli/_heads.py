"""Commands of stage 2: ``featx train``, ``featx evaluate``, ``featx predict``, ``featx export-model``, ``featx heads``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..core.errors import FeatxError, FeatxUsageError

__all__ = ["COMMANDS", "train", "evaluate", "predict", "export_model", "heads"]


def _head_names(value: str) -> list[str]:
    from ..heads import get_head

    names = [h.strip() for h in value.split(",") if h.strip()]
    if not names:
        raise FeatxUsageError("--heads needs at least one head name (see `featx heads`)")
    for name in names:
        get_head(name)
    return names


def _parse_params(values: tuple[str, ...], heads: list[str], engine_params: tuple[str, ...] = ()) -> dict:
    """``--param knn.n_neighbors=5`` -> ``{"knn": {"n_neighbors": 5}}`` (values read as YAML scalars).

    ``engine_params``: names that are the engine's, not the head factory's (checked by the engine)."""
    import yaml

    out: dict = {}
    for raw in values:
        key, sep, text = raw.partition("=")
        head, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise FeatxUsageError(f"--param {raw!r}: expected HEAD.NAME=VALUE, e.g. knn.n_neighbors=5")
        if head not in heads:
            raise FeatxUsageError(f"--param {raw!r}: head {head!r} is not in --heads")
        out.setdefault(head, {})[name] = yaml.safe_load(text)
    from ..heads import check_head_params

    for head, params in out.items():
        try:
            check_head_params(head, {k: v for k, v in params.items() if k not in engine_params})
        except FeatxUsageError as exc:
            raise FeatxUsageError(f"--param {exc}") from None
    return out


def _print_entries(entries: list[dict]) -> None:
    from ..core.results import results_table

    header, rows = results_table(entries)
    keep = [header.index(k) for k in ("head", "accuracy", "accuracy_ci", "macro_f1", "fit_seconds",
                                      "predict_seconds_per_1k", "params")]
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in keep[:-1]]
    click.echo("  ".join(header[i].ljust(w) for i, w in zip(keep, widths)) + "  params")
    for row in rows:
        click.echo("  ".join(row[i].ljust(w) for i, w in zip(keep, widths)) + "  " + row[keep[-1]])


@click.command()
@click.option("--features", "features", required=True, type=click.Path(),
              help="Feature store (.h5 file or sharded directory) from `featx extract`, or a.h5,b.h5,... to concatenate stores aligned by id.")
@click.option("--feature-set", "feature_set", default=None,
              help="Which sets to use: pooled (default), a layer set (featx info lists them), NAME+NAME for several, "
                   "or per store: a.h5:pooled+layer-1,b.h5:pooled.")
@click.option("--heads", "heads_", default="logreg", show_default=True, help="Comma-separated heads (see `featx heads`).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Results directory.")
@click.option("--per-class", type=click.IntRange(min=1), default=None, help="Few-shot: N training items per class.")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True, help="Repeat with seeds 0..K-1.")
@click.option("--splits", "splits", type=click.Path(dir_okay=False, exists=True), default=None, help="Reuse a recorded splits.json.")
@click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of the split when the store has none.")
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True,
              help="Small data: repeat on R splits (split seeds --split-seed ..+R-1); mean and spread in results.")
@click.option("--val-fraction", type=float, default=0.1, show_default=True)
@click.option("--test-fraction", type=float, default=0.2, show_default=True)
@click.option("--param", "param", multiple=True, help="Fix a head parameter instead of searching it: HEAD.NAME=VALUE.")
@click.option("--bootstrap", type=click.IntRange(min=100), default=1000, show_default=True, help="Bootstrap resamples for the CIs.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="BLAS/OpenMP threads per fit; 0: the libraries' default (1 is fastest on a machine busy with other work).")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
@click.option("--engine", default="local", show_default=True, type=click.Choice(["local", "ray"]),
              help="ray: the xgboost or the logreg head on Ray Train, each worker reading its share of the store's shards (the ray extra: pip install -e '.[ray]' in a checkout).")
@click.option("--ray-workers", type=click.IntRange(min=1), default=2, show_default=True, help="Ray Train workers (--engine ray).")
@click.option("--address", default=None, help="Ray cluster for --engine ray: 'auto' (a running `ray start` cluster), ray://HOST:PORT, or omitted: a private local Ray instance (never a cluster already running).")
@click.option("--max-memory", "max_memory", default=None, metavar="SIZE",
              help="Memory for the features a head holds (256MB, 4GB, ...); past it logreg and xgboost stream the store "
                   "batch by batch and other heads are skipped. Default: half the available memory.")
@click.option("--views", "views", default=None, type=click.Choice(["train", "test", "both"]),
              help="Average each row with its mirror view (added by `featx extract ... --views hflip` on this store): "
                   "on the train rows, on val and test, or on all.")
@click.option("--json", "as_json", is_flag=True, help="Print the results entries as JSON (progress stays on stderr).")
def train(features, feature_set, heads_, out, per_class, seeds, splits, split_seed, repeats, val_fraction, test_fraction,
          param, bootstrap, threads, quiet, engine, ray_workers, address, max_memory, views, as_json):
    """Train, select (on val) and evaluate (on test) classical heads on a feature store."""
    from ..heads import train_heads

    names = _head_names(heads_)
    if engine == "ray" and views:
        raise FeatxUsageError("--engine ray reads the store shard by shard; --views needs --engine local")
    if engine == "ray" and repeats != 1:
        raise FeatxUsageError("--engine ray trains on one split; drop --repeats")
    if engine == "ray" and names != ["logreg"]:
        _train_on_ray(features, names, out, per_class, seeds, feature_set, param, splits, split_seed, val_fraction,
                      test_fraction, bootstrap, quiet, ray_workers, address, as_json)
        return
    if engine == "ray" and feature_set:
        raise FeatxUsageError("--engine ray trains on the store's own features; drop --feature-set")
    # logreg on Ray: the local protocol and save path, the fit a Ray Train task (featx.heads._ray_logreg).
    ray_options = {"workers": ray_workers, "address": address} if engine == "ray" else None
    entries = train_heads(
        features, heads=names, params=_parse_params(param, names), per_class=per_class, seeds=seeds, out=out,
        splits=splits, split_seed=split_seed, val_fraction=val_fraction, test_fraction=test_fraction,
        n_boot=bootstrap, threads=threads or None, quiet=quiet, feature_set=feature_set, repeats=repeats,
        max_memory=max_memory, engine=engine, ray_options=ray_options, views=views,
    )
    if as_json:
        _echo_json(entries)
        return
    _print_entries(entries)
    saved = [e["model"] for e in entries if e.get("model")]
    click.echo(f"results: {Path(out) / 'results.json'} (and results.csv, results.md); each head saved as a model "
               f"under {Path(out) / '<head>'}" + (f" (featx predict --model {Path(out) / saved[0]} IMAGES)" if saved else ""))


def _echo_json(data) -> None:
    from ..core.io import json_text

    click.echo(json_text(data))


def _train_on_ray(features, names, out, per_class, seeds, feature_set, param, splits, split_seed, val_fraction,
                  test_fraction, bootstrap, quiet, workers, address, as_json=False) -> None:
    from ..core.errors import FeatxUsageError
    from ..heads import train_xgboost_ray

    if names != ["xgboost"] or per_class is not None or seeds != 1 or feature_set:
        raise FeatxUsageError("--engine ray trains the xgboost head alone (without --per-class, --seeds or "
                              "--feature-set; --param xgboost.pca and xgboost.strategy only) or the logreg head alone")
    entry = train_xgboost_ray(features, out, workers=workers, address=address, splits=splits, split_seed=split_seed,
                              val_fraction=val_fraction, test_fraction=test_fraction, n_boot=bootstrap, quiet=quiet,
                              params=_parse_params(param, names, engine_params=("strategy",)).get("xgboost"))
    if as_json:
        _echo_json([entry])
        return
    _print_entries([entry])
    click.echo(f"results: {Path(out) / 'results.json'} (and results.csv, results.md); head saved in {Path(out) / 'xgboost'} (featx predict --model {Path(out) / 'xgboost'})")


@click.command()
@click.option("--model", "model", required=True, type=click.Path(file_okay=False),
              help="A saved model: DIR/<head> from `featx train`, or any results row's model directory (with --source).")
@click.option("--features", "features", default=None, type=click.Path(),
              help="Feature store (.h5 file or sharded directory) to evaluate a head on; a.h5,b.h5,... for a head trained on concatenated stores.")
@click.option("--source", "source", default=None,
              help="Instead of --features: the images (folder, CSV, shards, ...) to evaluate any saved model on, fine-tunes included; the test split must be the one the model was scored on.")
@click.option("--splits", "splits", type=click.Path(dir_okay=False, exists=True), default=None, help="splits.json giving the test split.")
@click.option("--weights", default=None, help="With --source: backbone checkpoint file, as for `featx predict`.")
@click.option("--device", default="auto", show_default=True, help="With --source: auto, cpu, cuda or cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print the full entry as JSON.")
def evaluate(model, features, source, splits, weights, device, as_json):
    """Re-evaluate a saved model on its test split: a head on a feature store, or any model on the images."""
    if (features is None) == (source is None):
        raise FeatxUsageError("give --features STORE (a head) or --source IMAGES (any saved model), not both")
    if source is not None:
        from ..heads import evaluate_model

        entry = evaluate_model(model, source, splits=splits, weights=weights, device=device)
    else:
        from ..core.modeldir import is_model_dir, read_manifest
        from ..heads import evaluate_head

        if is_model_dir(model) and read_manifest(Path(model)).get("kind") == "finetune":
            raise FeatxUsageError(f"{model} is a fine-tune: it reads images, not features; give --source IMAGES")
        entry = evaluate_head(model, features, splits=splits)
    if as_json:
        from ..core.io import json_text

        click.echo(json_text(entry))
        return
    ci = entry["accuracy_ci"]
    click.echo(f"{entry['head']} on {features or source} ({entry['n_test']} test items): accuracy {entry['accuracy']:.4f} "
               f"[{ci[0]:.4f}, {ci[1]:.4f}], macro-F1 {entry['macro_f1']:.4f}, balanced accuracy {entry['balanced_accuracy']:.4f}")


@click.command()
@click.option("--model", "model", required=True, type=click.Path(file_okay=False),
              help="A saved model: the `model` directory of a results row (a head, raw-pixel control or fine-tune).")
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None, help="Write predictions here (default: stdout).")
@click.option("--json", "as_json", is_flag=True, help="JSON rows instead of CSV.")
@click.option("--weights", default=None,
              help="Backbone checkpoint file, for heads trained on --weights FILE features (a,b,... for several backbones).")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def predict(model, images, out, as_json, weights, batch_size, device):
    """Predict IMAGE_OR_FOLDER... end to end with a saved model: id, class, probabilities."""
    from ..core.io import json_text, write_atomic
    from ..heads import CLI_WEIGHTS, open_model, rows_to_csv

    loaded = open_model(model, weights=weights, device=device, batch_size=batch_size, option=CLI_WEIGHTS)
    rows = loaded.predict_rows(list(images), progress=True)
    text = json_text(rows) + "\n" if as_json else rows_to_csv(rows, loaded.manifest["class_names"])
    if out:
        write_atomic(Path(out), text)
    else:
        click.echo(text, nl=False)
    bad = [r for r in rows if r["error"]]
    for row in bad[:20]:
        click.echo(f"featx: skipped {row['id']}: {row['error']}", err=True)
    if out:
        click.echo(f"{len(rows) - len(bad)} predicted, {len(bad)} skipped -> {out}", err=True)
    if len(bad) == len(rows):
        raise FeatxError(f"none of the {len(rows)} file(s) could be read as an image")


@click.command("export-model")
@click.argument("model", type=click.Path(file_okay=False))
@click.option("--format", "fmt", default="onnx", show_default=True, type=click.Choice(["onnx", "torchscript"]))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="The graph file to write; FILE.preprocess.json is written beside it.")
@click.option("--weights", default=None, help="Backbone checkpoint file, as for `featx predict`.")
@click.option("--input-size", type=click.IntRange(min=1), default=None,
              help="Raw-pixel heads: the input side, a multiple of the control's size (downsampling inside the graph).")
def export_model(model, fmt, out, weights, input_size):
    """Export MODEL (a results row's `model`) as one graph: uint8 NHWC pixels -> class probabilities."""
    from ..heads import CLI_WEIGHTS
    from ..heads import export_model as run_export

    done = run_export(model, out, format=fmt, weights=weights, input_size=input_size, option=CLI_WEIGHTS)
    click.echo(f"{fmt} graph: {done['model']} (uint8 NHWC pixels -> probabilities of {len(done['classes'])} classes); "
               f"resize and crop as in {done['preprocess']}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Names, descriptions, search spaces and budgets as JSON.")
def heads(as_json):
    """List the classical heads, one line each."""
    from ..heads import get_head, list_heads

    specs = [get_head(name) for name in list_heads()]
    if as_json:
        click.echo(json.dumps([{"name": s.name, "description": s.description, "search_space": s.search_space,
                                "budget": s.budget, "selection": s.selection} for s in specs], indent=2, default=list))
        return
    width = max(len(s.name) for s in specs)
    for spec in specs:
        # The PCA step is part of the head (capped to the training rows by `featx train`): say so.
        pca = [n for n in (spec.search_space or {}).get("pca", []) if n]
        note = f" [PCA to {'/'.join(str(n) for n in pca)} components first]" if pca else ""
        click.echo(f"{spec.name:{width}s}  {spec.description}{note}")


COMMANDS = [train, evaluate, predict, export_model, heads]
