"""One exception hierarchy for featx.

The CLI maps these onto exit codes the way click does: a mistake in what the
user asked for (bad path, unknown backbone, invalid config) is a
:class:`FeatxUsageError` and exits 2; a failure while doing valid work (a store
in use, weights that do not fit the model) is a :class:`FeatxError` and exits 1.
Either way the user sees one line, never a traceback.
"""

from __future__ import annotations

__all__ = ["FeatxError", "FeatxUsageError", "StoreInUseError", "StoreMismatchError", "StoreDamagedError", "DiskError",
           "BadImageError", "missing_extra"]


class FeatxError(Exception):
    """A runtime failure with a message that says what to do about it (exit code 1)."""

    exit_code = 1


class FeatxUsageError(FeatxError, ValueError):
    """The user asked for something that cannot be done as asked (exit code 2)."""

    exit_code = 2


class StoreInUseError(FeatxError):
    """Another process is writing the same feature store."""


class StoreMismatchError(FeatxError):
    """An existing store was made from a different config or source than the one asked for."""


class BadImageError(FeatxError):
    """An image that cannot be used; the message is the reason recorded in the store."""


class StoreDamagedError(FeatxError):
    """A feature store (or a saved head) whose bytes are not what was written: truncated, corrupted, tampered."""


class DiskError(FeatxError):
    """The storage failed while featx was writing (no space left, quota, I/O error); nothing half-written is kept."""


def missing_extra(need: str, extra: str) -> FeatxError:
    """The error for an optional dependency that is not installed: ``need`` says what needs it.

    featx installs from a checkout (it is not on a package index), so the advice is the
    checkout's ``pip install -e '.[EXTRA]'``, never ``pip install 'featx[EXTRA]'``.
    """
    return FeatxError(f"{need}: install featx's {extra} extra (in a featx checkout: pip install -e '.[{extra}]')")
