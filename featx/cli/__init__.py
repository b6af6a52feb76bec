"""The ``featx`` command line: one click group, one module per command group.

``featx.cli:main`` is the console script. The group, its error policy and the table of
commands (name -> module, imported on first use) live in ``_group``; the commands of
each stage live beside it (``_extract``: extract, info, backbones; ``_export``: export;
``_heads``: heads, train, evaluate, predict, export-model; ``_finetune``: finetune; ``_pipeline``:
run, report; ``_search``: search; ``_bench``: bench). Nothing here imports torch, timm or
scikit-learn: ``featx --help`` and completion stay instant.
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def _interrupted_while_starting(signum, frame):  # pragma: no cover - exits the process
    # A Ctrl-C while the command line is still being imported: nothing has been written yet,
    # so one line and the shell's 130, not a traceback through the import machinery.
    sys.stderr.write("featx: interrupted while starting; nothing was done\n")
    sys.stderr.flush()
    os._exit(130)


def _started_as_command() -> bool:
    """True for the ``featx`` console script and ``python -m featx.cli``; False when a program imports us."""
    argv = list(getattr(sys, "orig_argv", []))
    as_module = any(a == "-m" and b in ("featx.cli", "featx") for a, b in zip(argv, argv[1:]))
    return as_module or os.path.basename(sys.argv[0] if sys.argv else "") in ("featx", "featx.exe")


# Only for the command, over Python's default handler, in the main thread: a program keeps its own.
if (_started_as_command() and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
    signal.signal(signal.SIGINT, _interrupted_while_starting)

from ._group import FeatxClickError, cli, main  # noqa: E402 - after the handler

__all__ = ["main", "cli", "FeatxClickError"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
