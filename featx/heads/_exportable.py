"""What ``featx export-model`` can export, apart from the exporter (torch), so the report's
hand-over can name it without importing torch."""

from __future__ import annotations

__all__ = ["EXPORT_MODEL_FORMATS", "EXPORTABLE_HEADS", "EXPORTABLE_KINDS"]

EXPORT_MODEL_FORMATS = ("onnx", "torchscript")
#: Head kinds written as one ONNX graph (the report's hand-over reads this too); tree and kernel
#: heads are not tensor programs.
EXPORTABLE_HEADS = ("logreg", "linear_svm", "mlp")
EXPORTABLE_KINDS = f"{', '.join(EXPORTABLE_HEADS)} (on any backbone, feature set or raw pixels) and fine-tunes"
