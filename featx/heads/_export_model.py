"""``featx export-model``: a saved model as one self-contained ONNX or TorchScript graph.

The graph takes uint8 pixels ``(N, H, W, 3)`` at the model's input size (the resize and
crop of timm's eval transform happen outside, as ``FILE.preprocess.json`` describes with
timm's data-config keys) and returns class probabilities ``(N, K)`` in the order of
``classes`` in that file. Inside: the scaling to [0, 1] and the mean/std normalisation,
every backbone of the features (several for a feature-set head, concatenated in the
recorded order, layers and views as extracted), and the head. A linear head (logreg)
is folded with its standardiser (and PCA, if any) into one ``Linear`` (linear_svm too,
followed by its per-class sigmoid calibration and normalisation); the MLP keeps its
two layers, the standardiser folded into the first; a fine-tune is its network plus a
softmax; the raw-pixel control's block-average downsampling (box filter) runs inside
when ``input_size`` is a multiple of its size.

Heads that are not tensor programs (trees, boosting, kNN, kernel SVMs)
are refused with the kinds that do export: the converters that exist for them (skl2onnx,
onnxmltools) produce a separate graph per scikit-learn estimator, not one graph with the
backbone, and featx's own torch heads would need converters of their own.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.errors import FeatxUsageError, missing_extra
from ..core.io import json_text, write_atomic
from ..extraction import embed_batch
from ._model import PYTHON_WEIGHTS, Model, open_model

__all__ = ["export_model", "EXPORT_MODEL_FORMATS", "EXPORTABLE_HEADS", "EXPORTABLE_KINDS"]

EXPORT_MODEL_FORMATS = ("onnx", "torchscript")
#: Head kinds written as one ONNX graph (the report's hand-over reads this too); tree and kernel
#: heads are not tensor programs.
EXPORTABLE_HEADS = ("logreg", "linear_svm", "mlp")
EXPORTABLE_KINDS = f"{', '.join(EXPORTABLE_HEADS)} (on any backbone, feature set or raw pixels) and fine-tunes"
OPSET = 17
_DATA_KEYS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")


def export_model(model_dir: str | os.PathLike, out: str | os.PathLike, *, format: str = "onnx",
                 weights: str | os.PathLike | None = None, input_size: int | None = None,
                 option: str = PYTHON_WEIGHTS) -> dict:
    """Export the saved model at ``model_dir`` to ``out``; returns ``{"model", "preprocess", "classes"}``.

    ``input_size`` (raw-pixel heads only) is the side of the square input, a multiple of
    the control's size: the box downsampling to that size then runs inside the graph.
    """
    if format not in EXPORT_MODEL_FORMATS:
        raise FeatxUsageError(f"--format {format!r} is not one of {', '.join(EXPORT_MODEL_FORMATS)}")
    model = open_model(model_dir, weights=weights, device="cpu", option=option)
    graph, preprocess = build_graph(model, input_size)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    example = _example(preprocess)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        if format == "onnx":
            _to_onnx(graph, example, tmp)
        else:
            _to_torchscript(graph, example, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    side = Path(f"{out}.preprocess.json")
    write_atomic(side, json_text(preprocess))
    return {"model": str(out), "preprocess": str(side), "classes": preprocess["classes"]}


def _example(preprocess: dict):
    _, height, width = preprocess["input_size"]
    return torch.zeros((2, height, width, 3), dtype=torch.uint8)


def _to_onnx(graph, example, path: Path) -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise missing_extra("ONNX export needs onnx (and onnxruntime to run it)", "export") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (example,), str(path), input_names=["pixels"], output_names=["probabilities"],
                          dynamic_axes={"pixels": {0: "batch"}, "probabilities": {0: "batch"}},
                          opset_version=OPSET, dynamo=False)


def _to_torchscript(graph, example, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(graph, example, check_trace=False)
    traced.save(str(path))


def build_graph(model: Model, input_size: int | None = None):
    """(``torch.nn.Module`` from uint8 NHWC pixels to probabilities, the preprocess.json document)."""
    classes = [str(c) for c in model.classes_]
    if model.kind == "finetune":
        config = _data_keys(model.manifest["data_config"])
        graph = _Graph([_Normalised(model.network, config["mean"], config["std"])], nn.Softmax(dim=1))
    elif getattr(model, "raw_size", None) is not None:
        size = model.raw_size
        side = size if input_size is None else int(input_size)
        if side < size or side % size:
            raise FeatxUsageError(f"--input-size {side}: a raw-pixel head ({size} x {size}) exports at a multiple of {size}")
        config = {"input_size": [3, side, side], "interpolation": "box", "crop_pct": 1.0, "crop_mode": "squash",
                  "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
        graph = _Graph([_RawPixels(side // size)], head_module(model.head))
    else:
        config = _shared_config(model)
        graph = _Graph([_Backbone(e) for e in model.embedders], head_module(model.head))
    if input_size is not None and getattr(model, "raw_size", None) is None:
        raise FeatxUsageError("--input-size applies to raw-pixel heads only; a network exports at its data config's size")
    graph.eval()
    graph.requires_grad_(False)
    preprocess = {**config, "input": {"name": "pixels", "dtype": "uint8", "layout": "NHWC"},
                  "output": {"name": "probabilities"}, "classes": classes, "model": str(model.path)}
    return graph, json.loads(json_text(preprocess))


def _data_keys(config: dict) -> dict:
    out = {k: config.get(k) for k in _DATA_KEYS}
    out["input_size"] = [int(v) for v in out["input_size"]]
    out["mean"], out["std"] = [float(v) for v in out["mean"]], [float(v) for v in out["std"]]
    out["crop_mode"] = out["crop_mode"] or "center"
    return out


def _shared_config(model) -> dict:
    """One input for every backbone: their resize and crop must agree (normalisation may differ)."""
    inputs = model.manifest.get("inputs") or [{"data_config": model.manifest["data_config"]}]
    configs = [_data_keys(i["data_config"]) for i in inputs]
    geometry = {json.dumps({k: c[k] for k in ("input_size", "interpolation", "crop_pct", "crop_mode")}) for c in configs}
    if len(geometry) > 1:
        raise FeatxUsageError("this head's backbones take differently sized or cropped inputs; one graph takes one "
                              "input: export a head on backbones with one data config (or each backbone's own head)")
    return configs[0]


_TENSOR_KINDS = ("LogisticRegression", "TorchLogisticRegression", "MLPClassifier", "CalibratedClassifierCV")


def head_module(head):
    """The head as torch layers ending in probabilities, or a usage error naming the kinds that export."""
    from sklearn.pipeline import Pipeline

    estimator = head.estimator
    steps = list(estimator.steps) if isinstance(estimator, Pipeline) else [("clf", estimator)]
    clf = steps[-1][1]
    kind = type(clf).__name__
    if kind not in _TENSOR_KINDS:  # the classifier decides first: a tree head is refused as a tree, not for its PCA
        raise FeatxUsageError(f"head {head.name} ({kind}) is not a tensor program and does not export; "
                              f"export-model exports {EXPORTABLE_KINDS}")
    M, v = _affine(steps[:-1], head.dim, head.name)
    if kind in ("LogisticRegression", "TorchLogisticRegression"):
        W, b = np.asarray(clf.coef_, np.float64), np.asarray(clf.intercept_, np.float64)
        if W.shape[0] == 1:  # binary: p = [1 - s(z), s(z)] is softmax([0, z])
            W, b = np.vstack([np.zeros_like(W), W]), np.concatenate([[0.0], b])
        return nn.Sequential(_linear(M @ W.T, v @ W.T + b), nn.Softmax(dim=1))
    if kind == "MLPClassifier":
        W0, b0 = np.asarray(clf.coefs_[0], np.float64), np.asarray(clf.intercepts_[0], np.float64)
        W1, b1 = np.asarray(clf.coefs_[1], np.float64), np.asarray(clf.intercepts_[1], np.float64)
        return nn.Sequential(_linear(M @ W0, v @ W0 + b0), nn.ReLU(), _linear(W1, b1), nn.Softmax(dim=1))
    if kind == "CalibratedClassifierCV":
        return _calibrated_linear(clf, M, v, head.name)
    raise FeatxUsageError(f"head {head.name} ({kind}) is not a tensor program and does not export; "
                          f"export-model exports {EXPORTABLE_KINDS}; use `featx predict` for this head")


def _calibrated_linear(clf, M, v, name: str):
    """linear_svm: each fold's LinearSVC decision, sigmoid-calibrated per class, normalised as scikit-learn does."""
    members = []
    for member in clf.calibrated_classifiers_:
        svm = member.estimator
        if (type(svm).__name__ != "LinearSVC" or member.method != "sigmoid"
                or list(svm.classes_) != list(clf.classes_)):
            raise FeatxUsageError(f"head {name}: only sigmoid-calibrated linear SVMs export; "
                                  f"export-model exports {EXPORTABLE_KINDS}")
        W, b = np.asarray(svm.coef_, np.float64), np.asarray(svm.intercept_, np.float64)
        a = [float(c.a_) for c in member.calibrators]
        c = [float(c.b_) for c in member.calibrators]
        members.append(_Calibrated(_linear(M @ W.T, v @ W.T + b), a, c, len(clf.classes_)))
    return _Mean(members)


def _affine(steps, dim: int, name: str):
    """The preprocessing steps as one map x -> x @ M + v (float64), or a refusal."""
    M, v = np.eye(dim), np.zeros(dim)
    for step_name, step in steps:
        kind = type(step).__name__
        if kind == "StandardScaler":
            mean = step.mean_ if step.mean_ is not None else 0.0
            scale = step.scale_ if step.scale_ is not None else 1.0
            M, v = M / scale, (v - mean) / scale
        elif kind in ("PCA", "CappedPCA"):
            step = getattr(step, "pca_", step)  # CappedPCA: the PCA it fitted with the capped component count
            C = np.asarray(step.components_, np.float64).T
            if step.whiten:
                C = C / np.sqrt(step.explained_variance_)
            M, v = M @ C, (v - step.mean_) @ C
        else:
            raise FeatxUsageError(f"head {name}'s step {step_name} ({kind}) does not export; "
                                  f"export-model exports {EXPORTABLE_KINDS}")
    return M, v


def _linear(W: np.ndarray, b: np.ndarray):
    """``nn.Linear`` computing x @ W + b (W is (in, out))."""
    layer = nn.Linear(W.shape[0], W.shape[1])
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(W.T, dtype=torch.float32))
        layer.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
    return layer


class _Graph(nn.Module):
    """uint8 NHWC -> [0, 1] NCHW -> each input's features, concatenated -> head."""

    def __init__(self, inputs, head):
        super().__init__()
        self.inputs, self.head = nn.ModuleList(inputs), head

    def forward(self, pixels):
        x = pixels.permute(0, 3, 1, 2).float() / 255.0
        feats = [block(x) for block in self.inputs]
        return self.head(feats[0] if len(feats) == 1 else torch.cat(feats, dim=1))


class _Normalised(nn.Module):
    """A network on (x - mean) / std, in the order featx's DeviceNormalizer computes it."""

    def __init__(self, network, mean, std):
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return self.network((x - self.mean) / self.std)


class _Backbone(_Normalised):
    """One input of a head's features: the recorded layers and views, its sets in order."""

    def __init__(self, embedder: dict):
        normalize = embedder["normalize"]
        super().__init__(embedder["model"], normalize.mean.flatten().tolist(), normalize.std.flatten().tolist())
        self.recipe, self.sets = embedder["recipe"], list(embedder["sets"])

    def forward(self, x):
        sets = embed_batch(self.network, (x - self.mean) / self.std, self.recipe)
        return torch.cat([sets[name].float().reshape(x.shape[0], -1) for name in self.sets], dim=1)


class _Calibrated(nn.Module):
    """p_k = sigmoid(-(a_k f_k + b_k)) of a one-vs-rest decision f; binary: [1 - p, p]; else p / sum(p)."""

    def __init__(self, linear, a, b, n_classes: int):
        super().__init__()
        self.linear, self.n_classes = linear, int(n_classes)
        self.register_buffer("a", torch.tensor(a, dtype=torch.float32).view(1, -1))
        self.register_buffer("b", torch.tensor(b, dtype=torch.float32).view(1, -1))

    def forward(self, z):
        p = torch.sigmoid(-(self.linear(z) * self.a + self.b))
        if self.n_classes == 2:
            return torch.cat([1.0 - p, p], dim=1)
        total = p.sum(dim=1, keepdim=True)
        return torch.where(total > 0, p / total.clamp_min(1e-30), torch.full_like(p, 1.0 / self.n_classes))


class _Mean(nn.Module):
    """The mean of several heads' probabilities (calibration folds kept as an ensemble)."""

    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, z):
        return torch.stack([m(z) for m in self.members]).mean(dim=0)


class _RawPixels(nn.Module):
    """The raw-pixel control's features: box-downsample by ``factor``, rounded to 8 bits as PIL
    does, then the H x W x RGB values in [0, 1], flattened in that order."""

    def __init__(self, factor: int):
        super().__init__()
        self.factor = int(factor)

    def forward(self, x):
        if self.factor > 1:
            x = torch.round(nn.functional.avg_pool2d(x * 255.0, self.factor)) / 255.0
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
