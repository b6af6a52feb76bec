"""The ``featx`` command line: one click group, one module per command group.

``featx.cli:main`` is the console script. The group and its error policy live in
``_group``; the commands of each stage live beside it (``_extract``: extract, info,
backbones; ``_export``: export; ``_heads``: heads, train, evaluate, predict; ``_finetune``: finetune;
``_pipeline``: run, report; ``_search``: search; ``_bench``: bench) and are added here in the order of the data path.
"""

from __future__ import annotations

import sys

from . import _bench, _export, _extract, _finetune, _heads, _pipeline, _search
from ._group import FeatxClickError, cli, main

__all__ = ["main", "cli", "FeatxClickError"]

for _module in (_extract, _export, _heads, _finetune, _pipeline, _search, _bench):
    for _command in _module.COMMANDS:
        cli.add_command(_command)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
