"""Ctrl-C that always stops the run.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be when SIGINT
arrives, and some of those places swallow it: ``os.register_at_fork`` callbacks (filelock
registers one, so every DataLoader worker start runs it), ``__del__`` methods, weakref
and ``atexit`` callbacks, broad ``except`` clauses in libraries. Python prints
"Exception ignored in ..." and carries on, and a run interrupted at the moment a
fine-tune epoch started its workers went on to finish and exit 0.

:func:`sticky_interrupts` installs a SIGINT handler that *records* the interrupt before
raising it. Where the raise gets swallowed, the record stays: :func:`check_interrupt`
(called at every batch and epoch boundary of the long loops) and the end of the
``with`` block raise it again, so the run stops with ``KeyboardInterrupt`` (exit 130 in
the CLI) at the next safe point, its checkpoints intact for a resume.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

__all__ = ["sticky_interrupts", "check_interrupt", "interrupt_pending"]

_STATE = {"pending": False, "depth": 0}


def _record_and_raise(signum, frame):
    _STATE["pending"] = True
    raise KeyboardInterrupt


def _quiet_unraisable(previous):
    """While recording, a swallowed KeyboardInterrupt is not printed as 'Exception ignored': it will be re-raised."""

    def hook(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and _STATE["pending"]:
            return
        previous(unraisable)

    return hook


def interrupt_pending() -> bool:
    return _STATE["pending"]


def check_interrupt() -> None:
    """Raise ``KeyboardInterrupt`` if one arrived inside :func:`sticky_interrupts` and was swallowed."""
    if _STATE["pending"]:
        raise KeyboardInterrupt


@contextlib.contextmanager
def sticky_interrupts() -> Iterator[None]:
    """Within the block, an interrupt that something swallowed is raised again at the next check.

    Nested blocks share one record; the outermost one installs the handler (only in the
    main thread, and only over Python's default handler, never over one the caller set)
    and forgets the record when it exits, so a caller that catches the final
    ``KeyboardInterrupt`` can go on.
    """
    outermost = _STATE["depth"] == 0
    installed = None
    if (outermost and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        installed = signal.signal(signal.SIGINT, _record_and_raise)
        unraisable, sys.unraisablehook = sys.unraisablehook, _quiet_unraisable(sys.unraisablehook)
    if outermost:
        _STATE["pending"] = False
    _STATE["depth"] += 1
    try:
        yield
        check_interrupt()
    except BaseException as exc:
        if _STATE["pending"] and not isinstance(exc, KeyboardInterrupt):
            # The interrupt came first (a DataLoader worker killed by the same Ctrl-C, say): it wins.
            raise KeyboardInterrupt from exc
        raise
    finally:
        _STATE["depth"] -= 1
        if outermost:
            if installed is not None:
                signal.signal(signal.SIGINT, installed)
                sys.unraisablehook = unraisable
            _STATE["pending"] = False
