"""A view added to an existing store, instead of a second store with both views.

``featx extract SRC --out X.h5 --views hflip`` where ``X.h5`` is a complete store of the
same configuration without views computes only what is missing: the mirror image's
embeddings (view ``mirror``, one pass over the images), written as a companion store
beside it, ``X.view-hflip.h5`` (``X.view-hflip`` for a sharded directory). The companion
is an ordinary featx store, so it is resumed when interrupted, verified when read and
reused when complete; its config records the view. ``X.h5`` itself is never rewritten.

At train time ``views: train | test | both`` (``featx train --views``) averages each row's
embedding with its mirror on the train rows, on the evaluated rows (val and test) or on all
rows (:func:`featx.heads.with_views`), and records the mode in the results row and key.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..core.errors import StoreDamagedError, StoreMismatchError

__all__ = ["view_path", "ADDED_VIEW", "COMPANION_VIEW", "plain_store"]

ADDED_VIEW = "hflip"     # the view a plain store can gain
COMPANION_VIEW = "mirror"  # what its companion holds: the mirror image's embeddings alone


def view_path(path: str | Path, view: str = ADDED_VIEW) -> Path:
    """Where the companion of the store at ``path`` holding ``view`` lives."""
    path = Path(path)
    if path.suffix == ".h5":
        return path.with_name(f"{path.stem}.view-{view}.h5")
    return path.with_name(f"{path.name}.view-{view}")


def plain_store(path: Path, config: dict, src):
    """The complete store at ``path`` if its config is ``config`` (the same extraction without views), else None.

    Anything else there (another config, a damaged or unfinished store) is left to the
    normal extraction path, which refuses or resumes it as it always has."""
    from ..store import check_existing, check_store_items

    if not (path.is_file() or path.is_dir()):
        return None
    try:
        store = check_existing(path, config, src)
        check = check_store_items(store, src)
    except (StoreMismatchError, StoreDamagedError):
        return None
    # Images changed since: the base must be refreshed first, or the two views would disagree.
    return store if store.complete and not (check is not None and check.changed) else None


def announce(base: Path, companion, quiet: bool) -> None:
    if not quiet:
        action = "reused" if getattr(companion, "reused", False) else "added"
        print(f"featx: view {ADDED_VIEW} {action} for {base}: its mirror pass is {companion.path} "
              f"(train with --views train|test|both)", file=sys.stderr, flush=True)
