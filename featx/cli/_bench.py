"""``featx bench``: speed measurements printed as ratios measured side by side in one run.

Benchmarks are not tests: each subcommand times the real code paths on this machine,
checks that it had the cores it assumed, and prints img/s (or seconds) with the ratios,
as a table or ``--json``. Subcommands live in their own modules and are added here.
"""

from __future__ import annotations

import click

from . import _bench_extract, _bench_heads, _bench_logreg

__all__ = ["COMMANDS", "bench"]


@click.group("bench")
def bench() -> None:
    """Time featx's data path and heads on this machine (ratios measured in one run)."""


for _module in (_bench_extract, _bench_logreg, _bench_heads):
    for _command in _module.COMMANDS:
        bench.add_command(_command)

COMMANDS = [bench]
