"""One progress helper for every long command.

In a terminal it is a live ``tqdm`` bar. Anywhere else (a pipe, a file, ``nohup``, CI) a redrawn bar
turns into thousands of log lines, so it prints a plain line instead, every ``interval`` seconds or
every ``percent_step`` percent, whichever comes first, with the rate and the ETA::

    train flow: 2500/10000 step (25%) 41.3 step/s, ETA 3m02s, loss=0.0123

Use it like tqdm: ``with progress(total=N, desc="collect", unit="ep") as bar: bar.update(1)``, or
wrap an iterable: ``for msg in progress(messages, total=n, unit="msg"): ...``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

DEFAULT_INTERVAL_S = 5.0
"""Seconds between plain lines (``ROBOLEARN_PROGRESS_INTERVAL`` overrides it)."""
DEFAULT_PERCENT_STEP = 10.0
"""A plain line is also printed each time another this many percent are done."""


def format_duration(seconds: float) -> str:
    """``75`` -> ``"1m15s"``; ``3725`` -> ``"1h02m"``; ``9.5`` -> ``"9.5s"``."""
    if seconds != seconds or seconds == float("inf"):
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def is_interactive(stream: TextIO) -> bool:
    """True when ``stream`` is a terminal that can redraw a bar (not a pipe, file or dumb terminal)."""
    try:
        return bool(stream.isatty()) and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):
        return False


class PlainProgress:
    """A tqdm-like counter that prints a plain line every few seconds or percent (see the module doc)."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, file: TextIO | None = None,
                 interval: float | None = None, percent_step: float = DEFAULT_PERCENT_STEP):  # fmt: skip
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self._start_n = initial
        self.file = file if file is not None else sys.stderr
        env = os.environ.get("ROBOLEARN_PROGRESS_INTERVAL")
        self.interval = float(env) if env else (DEFAULT_INTERVAL_S if interval is None else interval)
        self.percent_step = percent_step
        self.postfix: dict[str, Any] = {}
        self._t0 = self._last_t = time.perf_counter()
        self._last_pct = self._pct()
        self._closed = False

    def _pct(self) -> float:
        return 100.0 * self.n / self.total if self.total else 0.0

    def line(self) -> str:
        """The current status line (without a newline)."""
        elapsed = time.perf_counter() - self._t0
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        head = f"{self.desc}: " if self.desc else ""
        if self.total:
            left = (self.total - self.n) / rate if rate > 0 else float("inf")
            text = f"{head}{self.n}/{self.total} {self.unit} ({self._pct():.0f}%) {rate:.3g} {self.unit}/s, "
            text += (
                f"ETA {format_duration(left)}" if self.n < self.total else f"took {format_duration(elapsed)}"
            )
        else:
            text = f"{head}{self.n} {self.unit}, {rate:.3g} {self.unit}/s, {format_duration(elapsed)}"
        if self.postfix:
            text += ", " + ", ".join(f"{k}={v}" for k, v in self.postfix.items())
        return text

    def _emit(self) -> None:
        print(self.line(), file=self.file, flush=True)
        self._last_t, self._last_pct = time.perf_counter(), self._pct()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        due = now - self._last_t >= self.interval
        if self.total and self._pct() - self._last_pct >= self.percent_step:
            due = due or now - self._last_t >= min(1.0, self.interval)
        if due:
            self._emit()

    def set_postfix(self, **kwargs: Any) -> None:
        self.postfix = {k: v for k, v in kwargs.items()}

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.n != self._start_n:
                self._emit()

    def __iter__(self) -> Iterator:
        assert self.iterable is not None, "progress(iterable) is needed to iterate"
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Disabled(PlainProgress):
    def _emit(self) -> None:
        pass


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             initial: int = 0, enabled: bool = True, file: TextIO | None = None, leave: bool = True) -> Any:  # fmt: skip
    """A live tqdm bar on a terminal, plain lines elsewhere, nothing when ``enabled`` is False.

    The returned object has tqdm's ``update``, ``set_postfix``, ``set_description``, ``close``,
    iteration and context-manager API. Output goes to ``file`` (default stderr).
    """
    stream = file if file is not None else sys.stderr
    if not enabled:
        return _Disabled(iterable, total=total, desc=desc, unit=unit, initial=initial, file=stream)
    if is_interactive(stream):
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, file=stream, leave=leave)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, file=stream)


__all__ = ["PlainProgress", "format_duration", "is_interactive", "progress"]
