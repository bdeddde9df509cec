"""A small progress bar on stderr for long runs (``trace``, ``bench``); quick commands print none.

``Progress(total, label)``: ``update(done)`` (absolute) / ``advance(n)``, ``close()``; a context manager.
Redrawn at most every ``interval`` seconds with ``\\r`` when the stream is a terminal; when it is not (a
pipe, a CI log) nothing is drawn except one final summary line, so logs stay readable.  ``enabled``
forces it on or off.  Shows percent, bytes (or items with ``unit=""``), rate and ETA::

    fetch  [###########.........]  55%  4.4/8.0 MiB  31.2 Mbit/s  ETA 1s
"""
from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["Progress", "fmt_bytes"]


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class Progress:
    def __init__(self, total: float | None, label: str = "", stream: TextIO | None = None,
                 enabled: bool | None = None, unit: str = "B", width: int = 24, interval: float = 0.1) -> None:
        self.total = total
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", lambda: False)
        try:
            tty = bool(isatty())
        except (ValueError, OSError):
            tty = False
        self.enabled = tty if enabled is None else enabled
        self.live = self.enabled and tty      # redraw in place only on a terminal
        self.unit = unit
        self.width = width
        self.interval = interval
        self.done = 0.0
        self.t0 = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False
        self._closed = False

    def advance(self, n: float) -> None:
        self.update(self.done + n)

    def update(self, done: float) -> None:
        self.done = done
        if not self.live:
            return
        now = time.monotonic()
        if now - self._last_draw >= self.interval:
            self._last_draw = now
            self._draw(now)

    def _amount(self, v: float) -> str:
        return fmt_bytes(v) if self.unit == "B" else f"{v:.0f}{self.unit}"

    def render(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        elapsed = max(now - self.t0, 1e-9)
        rate = self.done / elapsed
        parts = [self.label] if self.label else []
        if self.total:
            frac = min(max(self.done / self.total, 0.0), 1.0)
            fill = int(frac * self.width)
            parts.append("[" + "#" * fill + "." * (self.width - fill) + "]")
            parts.append(f"{frac * 100:3.0f}%")
            if self.unit == "B":
                parts.append(f"{fmt_bytes(self.done).split()[0]}/{fmt_bytes(self.total)}")
            else:
                parts.append(f"{self.done:.0f}/{self.total:.0f}{self.unit}")
        else:
            parts.append(self._amount(self.done))
        parts.append(f"{rate * 8 / 1e6:.1f} Mbit/s" if self.unit == "B" else f"{rate:.1f}{self.unit}/s")
        if self.total and rate > 0 and self.done < self.total:
            parts.append(f"ETA {max(0.0, (self.total - self.done) / rate):.0f}s")
        else:
            parts.append(f"{elapsed:.1f}s")
        return "  ".join(parts)

    def _draw(self, now: float) -> None:
        line = self.render(now)
        try:
            self.stream.write("\r" + line + "\x1b[K")
            self.stream.flush()
        except (ValueError, OSError):
            self.live = False
            return
        self._drawn = True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.enabled:
            return
        try:
            if self.live:
                self._draw(time.monotonic())
                self.stream.write("\n")
            else:
                self.stream.write(self.render() + "\n")
            self.stream.flush()
        except (ValueError, OSError):
            pass

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
