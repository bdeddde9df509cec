"""A tiny progress bar on stderr (no dependencies).

On a terminal it redraws one line (``\\r``); otherwise (CI logs, pipes) it prints one line per step.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO


def _fmt_secs(s: float) -> str:
    s = max(0, int(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None, width: int = 28,
                 tty: bool | None = None) -> None:
        self.total = max(1, total)
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = self.stream.isatty() if tty is None else tty
        self.t0 = time.monotonic()
        self.label = ""
        self._last_len = 0

    def line(self) -> str:
        frac = min(1.0, self.done / self.total)
        fill = int(round(frac * self.width))
        bar = "#" * fill + "." * (self.width - fill)
        elapsed = time.monotonic() - self.t0
        eta = ""
        if 0 < self.done < self.total:
            eta = f" eta {_fmt_secs(elapsed / self.done * (self.total - self.done))}"
        return f"[{bar}] {self.done}/{self.total} {_fmt_secs(elapsed)}{eta} {self.label}"

    def _draw(self, final: bool = False) -> None:
        text = self.line()
        if self.tty:
            pad = max(0, self._last_len - len(text))
            self.stream.write("\r" + text + " " * pad + ("\n" if final else ""))
            self._last_len = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def start(self, label: str) -> None:
        """A step begins (redrawn on a terminal only, to keep logs short)."""
        self.label = label
        if self.tty:
            self._draw()

    def step(self, label: str | None = None, n: int = 1) -> None:
        """``n`` steps finished."""
        self.done += n
        if label is not None:
            self.label = label
        self._draw()

    def note(self, text: str) -> None:
        """A message on its own line, without breaking the bar."""
        if self.tty:
            self.stream.write("\r" + " " * self._last_len + "\r")
        self.stream.write(text + "\n")
        self.stream.flush()
        if self.tty:
            self._draw()

    def close(self) -> None:
        self.label = "done"
        if self.tty:
            self._draw(final=True)
