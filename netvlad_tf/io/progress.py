"""Progress of long work: Keras' bar on a terminal, plain lines in a log.

Keras' `Progbar` redraws itself with carriage returns, backspaces and colour codes wherever it
runs (it takes every POSIX process for a terminal), which turns a log of a multi-day run
(`nohup`, CI, a Ray job) into megabytes of escape codes. `Progress` keeps the bar where someone
watches it (a terminal, a notebook) and elsewhere prints a plain line every `LOG_INTERVAL_SECONDS`:
done/total, rate and time left.
"""

from __future__ import annotations

import sys
import time

import keras

# Seconds between two plain progress lines off a terminal.
LOG_INTERVAL_SECONDS = 30.0


def interactive() -> bool:
    """Whether standard output is watched live (a terminal or a notebook), not written to a log."""
    return bool(getattr(sys.stdout, "isatty", lambda: False)()) or "ipykernel" in sys.modules


def fit_verbosity(verbose) -> int:
    """Keras `fit`'s `verbose` for this output: the bar (1) live, a line per epoch (2) in a log.

    Args:
        verbose: 0 (silent), 1 or 2 as Keras takes it, or `"auto"`.

    Example:
    >>> fit_verbosity(0), fit_verbosity(2)
    (0, 2)
    """
    if verbose == "auto" or verbose == 1:
        return 1 if interactive() else 2
    return int(verbose)


def format_duration(seconds: float) -> str:
    """`h:mm:ss` (or `m:ss` under an hour).

    Example:
    >>> format_duration(59.6), format_duration(3725)
    ('1:00', '1:02:05')
    """
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class Progress:
    """Progress over `total` units: Keras' bar when `interactive()`, else plain lines.

    Off a terminal a line is printed at most every `interval` seconds and once at the end:
    `embedding: 120/400 images (30%), 2.10 images/s, 2:13 left`.

    Args:
        total: units in all (None: unknown; it may be set later through `total`).
        unit: what is counted, singular (`"image"`).
        verbose: False prints nothing.
        label: what the work is, at the start of each plain line.
        interval: seconds between plain lines.

    Example:
    >>> progress = Progress(4, unit="image", label="embedding", interval=0)
    >>> progress.update(4)   # doctest: +ELLIPSIS
    embedding: 4/4 images (100%), ... images/s, ... elapsed
    """

    def __init__(self, total: int | None, unit: str = "step", verbose: bool = True,
                 label: str | None = None, interval: float = LOG_INTERVAL_SECONDS):
        self.unit = unit
        self.verbose = bool(verbose)
        self.label = label or unit + "s"
        self.interval = interval
        self._bar = keras.utils.Progbar(total, unit_name=unit) if self.verbose and interactive() else None
        self._total = total
        self._start = time.monotonic()
        self._last_line = self._start
        self._last_done = None

    @property
    def total(self) -> int | None:
        """Units in all (None: unknown)."""
        return self._total

    @total.setter
    def total(self, value: int | None) -> None:
        self._total = value
        if self._bar is not None:
            self._bar.target = value

    def update(self, done: int) -> None:
        """Reports that `done` units are finished in all."""
        if not self.verbose:
            return
        if self._bar is not None:
            self._bar.update(done)
            return
        now = time.monotonic()
        finished = self._total is not None and done >= self._total
        if done == self._last_done or not (finished or now - self._last_line >= self.interval):
            return
        self._last_line, self._last_done = now, done
        print(self.line(done, now - self._start), flush=True)

    def line(self, done: int, elapsed: float) -> str:
        """The plain line for `done` units after `elapsed` seconds.

        Example:
        >>> Progress(400, unit="image", label="embedding").line(120, 60.0)
        'embedding: 120/400 images (30%), 2.00 images/s, 2:20 left'
        """
        rate = done / elapsed if elapsed > 0 else 0.0
        plural = self.unit[:-1] + "ies" if self.unit.endswith("y") else self.unit + "s"
        if self._total is None:
            return f"{self.label}: {done} {plural}, {rate:.2f} {plural}/s, {format_duration(elapsed)} elapsed"
        share = f"{100 * done / self._total:.0f}%" if self._total else "100%"
        head = f"{self.label}: {done}/{self._total} {plural} ({share}), {rate:.2f} {plural}/s"
        if done >= self._total:
            return f"{head}, {format_duration(elapsed)} elapsed"
        left = (self._total - done) / rate if rate > 0 else None
        return f"{head}, {format_duration(left) + ' left' if left is not None else 'time left unknown'}"
