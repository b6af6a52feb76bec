"""Embeddings back to the host and into the store without waiting on the device.

The main thread queues each batch's embeddings (on CUDA: an asynchronous copy into a
pinned host buffer plus an event recorded after it) and moves on to the next batch; a
writer thread waits for the event, then writes the rows with ``StoreWriter.write_batch``
(features, flush, status, flush), one batch after another in submission order. So the
store's guarantees hold unchanged: rows are written batch by batch, a row's status is
written after its features, and a process killed at any point leaves only whole
batches marked done. The queue is bounded, so the host never runs more than a few
batches ahead of the disk. An error in the writer thread is raised in the main thread
at its next ``submit`` or at ``close``.
"""

from __future__ import annotations

import queue
import threading

import numpy as np
import torch

__all__ = ["BackgroundWriter", "to_host"]

_STOP = object()


def to_host(feats: torch.Tensor, n: int) -> tuple[torch.Tensor, object]:
    """``(host tensor, event)``: float32 (n, D) rows on the host; on CUDA copied asynchronously."""
    feats = feats.reshape(n, -1)
    if feats.device.type != "cuda":
        return feats.float(), None
    feats = feats.float()
    host = torch.empty(feats.shape, dtype=torch.float32, pin_memory=True)
    host.copy_(feats, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return host, event


class BackgroundWriter:
    """A thread that writes ``(start, features, reasons)`` batches to a ``StoreWriter`` in order."""

    def __init__(self, writer, depth: int = 4):
        self.writer = writer
        self.error: BaseException | None = None
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.thread = threading.Thread(target=self._loop, name="featx-store-writer", daemon=True)
        self.thread.start()

    def submit(self, start: int, feats: torch.Tensor, event, reasons: list[str | None], records=None,
               extra: dict[str, torch.Tensor] | None = None) -> None:
        """Queue one batch; ``records`` (item records, one per row) and ``extra`` (the named
        feature sets' rows) go to ``write_batch`` with the rows."""
        self._raise()
        self.queue.put((start, feats, event, reasons, records, extra))
        self._raise()

    def close(self) -> None:
        """Write what was queued, stop the thread, and raise its error if it had one."""
        if self.thread.is_alive():
            self.queue.put(_STOP)
            self.thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def _loop(self) -> None:
        failed = False
        while True:
            job = self.queue.get()
            if job is _STOP:
                return
            if failed:
                continue  # keep draining so the main thread never blocks on a full queue
            try:
                self._write(*job)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                self.error, failed = exc, True

    def _write(self, start: int, feats: torch.Tensor, event, reasons: list[str | None], records, extra) -> None:
        if event is not None:
            event.synchronize()
        bad = [i for i, r in enumerate(reasons) if r]

        def rows_of(tensor: torch.Tensor) -> np.ndarray:
            rows = tensor.numpy().astype(np.float32, copy=True)
            rows[bad] = 0.0
            return rows

        sets = {name: rows_of(value) for name, value in extra.items()} if extra else None
        if records is None and sets is None:
            self.writer.write_batch(start, rows_of(feats), reasons)
        else:
            self.writer.write_batch(start, rows_of(feats), reasons, records, extra=sets)
