"""Progress for long loops: a tqdm bar on a terminal, plain lines in a log.

A bar redraws itself with carriage returns, which turn a log file or a CI console
into one unreadable line; so the bar is drawn only when stderr is a terminal (or in a
Jupyter notebook, where tqdm draws a widget). Anywhere
else the same calls print a plain line (``extract: 400/1797 (22%), 40.1 img/s, about 35 s
left``) at most every ``interval`` seconds and once at the end, with no ``\\r``.
"""

from __future__ import annotations

import sys
import time

__all__ = ["progress_bar", "PlainProgress", "is_terminal"]

PLAIN_INTERVAL_S = 10.0


def is_terminal(stream=None) -> bool:
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


class PlainProgress:
    """The subset of tqdm's API featx uses (update, set_postfix, set_description, close), as lines."""

    def __init__(self, total: int | None, desc: str, unit: str, disable: bool = False,
                 interval: float = PLAIN_INTERVAL_S, stream=None):
        self.total, self.desc, self.unit, self.disable = total, desc, unit, disable
        self.interval, self.stream = interval, stream
        self.n, self.postfix = 0, ""
        self._start = self._last = time.perf_counter()
        self._printed_at_n = 0
        self._closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._last = now
            self._line()

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = text

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.n != self._printed_at_n:
            self._line()

    def _line(self) -> None:
        if self.disable:
            return
        self._printed_at_n = self.n
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        rate = self.n / elapsed
        parts = [f"{self.n}/{self.total}" if self.total else str(self.n)]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(f"{rate:.1f} {self.unit}/s")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"about {(self.total - self.n) / rate:.0f} s left")
        if self.postfix:
            parts.append(self.postfix)
        stream = self.stream if self.stream is not None else sys.stderr
        print(f"{self.desc}: " + ", ".join(parts), file=stream, flush=True)


def _in_notebook() -> bool:
    # A Jupyter kernel's stderr is no terminal, but tqdm.auto draws a widget there, not \r lines.
    return "ipykernel" in sys.modules


def progress_bar(total: int | None, desc: str, unit: str = "it", disable: bool = False, **tqdm_options):
    """A tqdm bar when stderr is a terminal (or in a notebook), else :class:`PlainProgress` (no carriage returns)."""
    if is_terminal() or _in_notebook():
        from tqdm.auto import tqdm

        tqdm_options.setdefault("dynamic_ncols", True)
        return tqdm(total=total, desc=desc, unit=unit, disable=disable, **tqdm_options)
    return PlainProgress(total, desc, unit, disable=disable)  # tqdm's drawing options do not apply
