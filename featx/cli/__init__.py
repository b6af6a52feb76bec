"""The ``featx`` command line: one click group, one module per command group.

``featx.cli:main`` is the console script. The group, its error policy and the table of
commands (name -> module, imported on first use) live in ``_group``; the commands of
each stage live beside it (``_extract``: extract, info, backbones; ``_export``: export;
``_heads``: heads, train, evaluate, predict; ``_finetune``: finetune; ``_pipeline``:
run, report; ``_bench``: bench). Nothing here imports torch, timm or scikit-learn:
``featx --help`` and completion stay instant.
"""

from __future__ import annotations

import sys

from ._group import FeatxClickError, cli, main

__all__ = ["main", "cli", "FeatxClickError"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
