"""A progress display for long steps, with an ETA: one updating line on a terminal, a few plain lines in a log.

    with Progress("gen 2/5", total=4, unit="jobs") as progress:
        for result in finished_jobs():
            progress.advance(note=f"{result.name}: {result.fitness:+.4f}")

On a terminal (stderr is a TTY) the line ``gen 2/5: 3/4 jobs done, ETA 1m20s (dpo_v2: +0.0123)`` is rewritten
in place, at most a few times a second, and a ticker keeps its clock moving between steps. Anywhere else (a log
file, CI, a pipe) it prints one line when the step starts, one at most every ``interval`` seconds while it runs,
and one when it ends: a long run never floods its log. Standard library only; thread-safe, so job callbacks may
call ``advance`` from other threads. Messages printed while the line is up go through ``progress.write(...)``.
"""

from __future__ import annotations

import math
import shutil
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

__all__ = ["Console", "Progress", "format_duration"]


def format_duration(seconds: float) -> str:
    """``45s``, ``1m20s``, ``2h05m``; ``?`` for a duration that is not known (NaN, infinite, negative)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Progress of one step: ``total`` units (``None``: not known, then elapsed time stands in for the ETA).

    ``stream`` is stderr by default; ``tty`` says whether to rewrite one line (default: ``stream.isatty()``).
    ``interval`` is the least time between two plain lines (default 30 s); ``refresh`` the least time between two
    redraws of the terminal line (0.2 s); ``tick`` how often the ticker redraws it without an ``advance`` (1 s;
    0: no ticker thread). ``enabled=False`` prints nothing. ``clock`` is for tests.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        unit: str = "",
        stream: TextIO | None = None,
        tty: bool | None = None,
        interval: float = 30.0,
        refresh: float = 0.2,
        tick: float = 1.0,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if total is not None and total < 0:
            raise ValueError(f"total must be 0 or more, got {total}")
        self.label = label
        self.total = total
        self.unit = unit
        self.done = 0
        self.note = ""
        self.enabled = enabled
        self._stream = stream
        self._tty = tty
        self._interval = interval
        self._refresh = refresh
        self._tick = tick
        self._clock = clock
        self._lock = threading.RLock()
        self._start: float | None = None
        self._last_print = -math.inf
        self._width = 0  # of the line on the terminal now, to blank what a shorter one leaves
        self._closed = False
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # the stream is looked up late: pytest's capsys and redirect_stderr replace sys.stderr after construction
    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    @property
    def tty(self) -> bool:
        if self._tty is None:
            isatty = getattr(self.stream, "isatty", None)
            self._tty = bool(isatty and isatty())
        return self._tty

    # what is shown

    @property
    def elapsed(self) -> float:
        return 0.0 if self._start is None else max(0.0, self._clock() - self._start)

    def eta(self) -> float | None:
        """Seconds left at the mean pace so far; ``None`` before the first unit or without a total."""
        if self.total is None or self.done <= 0:
            return None
        return self.elapsed / self.done * max(0, self.total - self.done)

    def line(self, final: str = "") -> str:
        """``gen 2/5: 3/4 jobs done, ETA 1m20s (note)``; with ``final`` (``done``, ``failed``) the closing line."""
        unit = f" {self.unit}" if self.unit else ""
        if self.total is not None:
            count = f"{self.done}/{self.total}{unit}"
        else:
            count = f"{self.done}{unit}" if self.done or unit else ""
        if final:
            status = " ".join(p for p in (count, final, f"in {format_duration(self.elapsed)}") if p)
        else:
            eta = self.eta()
            if eta is not None and self.done < (self.total or 0):
                timing = f"ETA {format_duration(eta)}"
            else:
                timing = f"{format_duration(self.elapsed)} elapsed"
            status = f"{count} done, {timing}" if count else timing
        return f"{self.label}: {status}" + (f" ({self.note})" if self.note else "")

    # updates

    def start(self) -> Progress:
        with self._lock:
            if self._start is not None:
                return self
            self._start = self._clock()
            if not self.enabled:
                return self
            if self.tty:
                self._draw(force=True)
                if self._tick > 0:
                    self._ticker = threading.Thread(target=self._run_ticker, name=f"progress {self.label}", daemon=True)
                    self._ticker.start()
            else:
                self._print(f"{self.label} ...")
        return self

    def advance(self, n: int = 1, note: str = "") -> None:
        """``n`` more units done; ``note`` (the latest result, say) replaces the note shown after the count."""
        with self._lock:
            if self._start is None:
                self.start()
            self.done += n
            if note:
                self.note = note
            if not self.enabled or self._closed:
                return
            finished = self.total is not None and self.done >= self.total
            if self.tty:
                self._draw(force=finished)
            elif self._clock() - self._last_print >= self._interval and not finished:
                self._print(self.line())  # the finished line comes from close()

    def set_note(self, note: str) -> None:
        with self._lock:
            self.note = note
            if self.enabled and self.tty and not self._closed and self._start is not None:
                self._draw()

    def write(self, message: str) -> None:
        """Print ``message`` on a line of its own, above the progress line on a terminal."""
        with self._lock:
            if self.tty and self.enabled and self._width and not self._closed:
                self.stream.write("\r" + " " * self._width + "\r" + message + "\n")
                self._width = 0
                self._draw(force=True)
            else:
                self.stream.write(message + "\n")
            self.stream.flush()

    def close(self, final: str = "done") -> None:
        """The closing line (``... done in 4m12s``); idempotent."""
        with self._lock:
            if self._closed:
                return
            if self._start is None:
                self._start = self._clock()
            self._closed = True
            self._stop.set()
            if self.enabled:
                if self.tty:
                    self._draw(force=True, text=self.line(final), end="\n")
                else:
                    self._print(self.line(final))
        if self._ticker is not None and self._ticker is not threading.current_thread():
            self._ticker.join(timeout=1.0)

    def __enter__(self) -> Progress:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:
            self.close("done")
        else:
            self.close("interrupted" if issubclass(kind, KeyboardInterrupt) else "stopped")

    # output

    def _print(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()
        self._last_print = self._clock()

    def _draw(self, force: bool = False, text: str | None = None, end: str = "") -> None:
        now = self._clock()
        if not force and now - self._last_print < self._refresh:
            return
        text = self.line() if text is None else text
        columns = shutil.get_terminal_size((100, 24)).columns
        if len(text) >= columns:  # a wrapped line could not be rewritten in place
            text = text[: max(1, columns - 2)] + "~"
        pad = " " * max(0, self._width - len(text))
        self.stream.write("\r" + text + pad + end)
        self.stream.flush()
        self._width = 0 if end else len(text)
        self._last_print = now

    def _run_ticker(self) -> None:
        while not self._stop.wait(self._tick):
            with self._lock:
                if not self._closed:
                    self._draw(force=True)


class Console:
    """A run's log lines plus one progress display per long step: ``console("a line")``, and
    ``with console.step("gen 2/5", total=4, unit="jobs") as progress: ...``. While a step's line is up on a
    terminal, log lines go above it instead of through it; elsewhere they go to ``log`` as they always did.
    ``enabled=False`` (the library default) shows no progress at all, only the log lines."""

    def __init__(self, log: Callable[[str], None] = print, enabled: bool = False) -> None:
        self._log, self.enabled = log, enabled
        self._current: Progress | None = None

    def __call__(self, message: str) -> None:
        current = self._current
        if current is not None and current.enabled and current.tty:
            current.write(message)
        else:
            self._log(message)

    def step(self, label: str, total: int | None = None, unit: str = "") -> _Step:
        return _Step(self, Progress(label, total, unit=unit, enabled=self.enabled))


class _Step:
    def __init__(self, console: Console, progress: Progress) -> None:
        self._console, self._progress = console, progress

    def __enter__(self) -> Progress:
        self._console._current = self._progress
        return self._progress.__enter__()

    def __exit__(self, kind, value, traceback) -> None:
        self._console._current = None
        self._progress.__exit__(kind, value, traceback)
