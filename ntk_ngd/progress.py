"""Progress of long commands: one line on stderr per finished unit (a method, a width, a figure, a benchmark),
printed as it finishes, so that a slow unit can be told from a hung one.

Every ``ntk-ngd`` command that can run longer than a few seconds reports through :class:`Progress`; whether it
prints is decided once, by :func:`wanted`: ``--progress`` forces the lines on (they go to stderr, so even
``--json`` output on stdout stays valid), ``--no-progress`` off, and by default they appear only when stderr is
a terminal and ``--json`` was not given. The final table or JSON on stdout is the same with or without them.

A line reads ``[train 3/14] kfac: 2.1 s (final loss 1.2e-05)``: the command, the unit's index among the
planned units, its name, its wall time and a short result.
"""
from __future__ import annotations

import sys
import time


def wanted(flag: bool | None, quiet: bool = False, stream=None) -> bool:
    """Print progress? ``flag`` True/False (``--progress``/``--no-progress``) decides; None: only on a terminal
    and not ``quiet`` (``--json``)."""
    if flag is not None:
        return bool(flag)
    stream = sys.stderr if stream is None else stream
    return not quiet and bool(getattr(stream, "isatty", lambda: False)())


class Progress:
    """Lines ``[label i/total] unit: seconds (detail)`` on ``stream`` (default stderr), when ``enabled``.

    :meth:`done` closes a unit (its time runs from the previous unit's end, or from :meth:`start`);
    :meth:`note` prints one free line (a skipped method, a plan) under the same label."""

    def __init__(self, label: str, total: int, enabled: bool, stream=None):
        self.label, self.total, self.enabled = label, int(total), bool(enabled)
        self.stream = stream
        self.count = 0
        self._last = time.perf_counter()

    def _print(self, text: str) -> None:
        if self.enabled:
            print(text, file=sys.stderr if self.stream is None else self.stream, flush=True)

    def start(self) -> "Progress":
        """Restart the clock of the current unit (work between units that should not count)."""
        self._last = time.perf_counter()
        return self

    def note(self, text: str) -> None:
        self._print(f"[{self.label}] {text}")

    def done(self, unit: str, detail: str = "") -> float:
        """Record one finished unit; returns its wall time in seconds."""
        now = time.perf_counter()
        seconds, self._last = now - self._last, now
        self.count += 1
        tail = f" ({detail})" if detail else ""
        self._print(f"[{self.label} {self.count}/{self.total}] {unit}: {seconds:.1f} s{tail}")
        return seconds

    __call__ = done


def from_args(args, label: str, total: int) -> Progress:
    """The :class:`Progress` of a parsed command line (its ``--progress`` and ``--json`` flags)."""
    return Progress(label, total, wanted(getattr(args, "progress", None), getattr(args, "json", False)))


__all__ = ["Progress", "from_args", "wanted"]
