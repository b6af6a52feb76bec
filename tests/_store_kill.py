"""Run one extraction and SIGKILL itself at a named point inside a store write path.

``python -m tests._store_kill FOLDER OUT POINT [overwrite]``; used by ``test_faults_store``.
Points:

* ``create``: the skeleton is written under ``.creating``, before its rename into place;
* ``rows``: inside the third batch, after its features and item records, before its status;
* ``finish-run``: in ``finish``, after the run attributes, at the first fsync;
* ``finish-complete``: in ``finish``, at the fsync after ``complete`` was set;
* ``replace``: an ``--overwrite`` build complete, before it replaces the old store;
* ``refresh``: marking changed items pending again, after ``complete`` was cleared.
"""

from __future__ import annotations

import os
import signal
import sys

import featx
from featx.store import _writer


def _die(*_args, **_kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


def _after_calls(real, n: int):
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n:
            _die()
        return real(*args, **kwargs)

    return wrapper


def _die_on_replace(suffix: str) -> None:
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if str(src).endswith(suffix):
            _die()
        return real(src, dst, *args, **kwargs)

    os.replace = replace


def arm(point: str) -> None:
    if point == "create":
        _die_on_replace(".creating")
    elif point == "rows":
        real = _writer.StoreWriter._write_records
        calls = {"n": 0}

        def records_then_die(self, start, records):
            real(self, start, records)
            calls["n"] += 1
            if calls["n"] == 3:
                self.h5.flush()
                _die()

        _writer.StoreWriter._write_records = records_then_die
    elif point == "finish-run":
        _writer._fsync = _after_calls(_writer._fsync, 0)
    elif point == "finish-complete":
        _writer._fsync = _after_calls(_writer._fsync, 1)
    elif point == "replace":
        _die_on_replace(".new")
    elif point == "refresh":
        def clear_then_die(self, touched, changed):
            self.h5.attrs.modify("complete", False)
            self.h5.flush()
            _die()

        _writer.StoreWriter.refresh_items = clear_then_die
    else:
        raise SystemExit(f"unknown kill point {point}")


if __name__ == "__main__":
    folder, out, point = sys.argv[1:4]
    overwrite = len(sys.argv) > 4 and sys.argv[4] == "overwrite"
    spec = featx.resolve_backbone("test_efficientnet", weights="random", pooling="max" if overwrite else "avg")
    arm(point)
    featx.extract(folder, spec, out, batch_size=2, workers=0, quiet=True, overwrite=overwrite)
    raise SystemExit(3)  # the kill point was never reached
