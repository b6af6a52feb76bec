"""``featx bench``: speed measurements printed as ratios measured side by side in one run.

Benchmarks are not tests: each subcommand times the real code paths on this machine,
checks that it had the cores it assumed, and prints img/s (or seconds) with the ratios,
as a table or ``--json``. Subcommands live in their own modules and are added here.
"""

from __future__ import annotations

import click

from ._group import LazyGroup

__all__ = ["COMMANDS", "bench"]

SUBCOMMANDS = {
    "extract": "._bench_extract:bench_extract",
    "finetune": "._bench_extract:bench_finetune",
    "logreg": "._bench_logreg:bench_logreg_command",
}


@click.group("bench", cls=LazyGroup, lazy=SUBCOMMANDS)
def bench() -> None:
    """Time featx's data path and heads on this machine (ratios measured in one run)."""

COMMANDS = [bench]
