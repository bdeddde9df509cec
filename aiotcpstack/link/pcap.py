"""pcap tap: write every frame a link sends or receives to a classic pcap file.

Why classic pcap (not pcapng): it is the format every tool reads (Wireshark, tcpdump, scapy's
``rdpcap``), needs twelve lines to write, and a ``PcapLink`` can wrap *any* link -- the simulated
one included, where timestamps come from the virtual clock, so a failing seeded run can be opened
in Wireshark with its simulated timing.
"""
from __future__ import annotations

import os
import struct
import time
from typing import Any, BinaryIO, Callable, Optional, Union

from .base import Frame, Link, OnFrames, RxItem

__all__ = ["PcapWriter", "PcapLink", "LINKTYPE_ETHERNET"]

PCAP_MAGIC_US = 0xA1B2C3D4  # microsecond timestamps
LINKTYPE_ETHERNET = 1
_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")


class PcapWriter:
    """Classic pcap writer (little endian, microsecond resolution, LINKTYPE_ETHERNET).

    ``write(frame, ts)`` takes the timestamp from the caller (virtual or real time) so the file is
    deterministic for simulated runs.  ``snaplen`` defaults to 262144 (tcpdump's): a 64 KB GSO/TSO
    super-frame plus its headers is larger than 65535 and must not be cut.
    """

    def __init__(self, path_or_file: Union[str, os.PathLike, BinaryIO], snaplen: int = 262144,
                 flush_every: int = 0) -> None:
        if hasattr(path_or_file, "write"):
            self._f: BinaryIO = path_or_file  # type: ignore[assignment]
            self._own = False
        else:
            self._f = open(path_or_file, "wb")  # type: ignore[arg-type]
            self._own = True
        self.snaplen = snaplen
        self.flush_every = flush_every
        self.count = 0
        self._f.write(_GLOBAL.pack(PCAP_MAGIC_US, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET))

    def write(self, frame: Frame, ts: float) -> None:
        if self._f is None:
            raise ValueError("PcapWriter is closed")
        sec = int(ts)
        usec = int(round((ts - sec) * 1_000_000))
        if usec >= 1_000_000:
            sec += 1
            usec -= 1_000_000
        orig = len(frame)
        incl = min(orig, self.snaplen)
        self._f.write(_RECORD.pack(sec, usec, incl, orig))
        self._f.write(frame[:incl] if incl < orig else frame)
        self.count += 1
        if self.flush_every and self.count % self.flush_every == 0:
            self._f.flush()

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()

    def close(self) -> None:
        if self._f is None:
            return
        self._f.flush()
        if self._own:
            self._f.close()
        self._f = None  # type: ignore[assignment]

    def __enter__(self) -> "PcapWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PcapLink(Link):
    """Wraps any :class:`Link` and records both directions into a :class:`PcapWriter`.

    Sent GSO super-frames are recorded as sent (one big frame, like ``tcpdump`` on the sending
    host); a partial checksum is recorded as is (Wireshark flags it, as it does for offloaded
    captures).  ``clock``: a callable returning the timestamp (``time.time``, or a ``SimClock``).
    ``close_writer``: close the writer with the link.
    """

    def __init__(self, inner: Link, writer: PcapWriter, clock: Callable[[], float] = time.time,
                 close_writer: bool = True) -> None:
        self.inner = inner
        self.writer = writer
        self.clock = clock
        self.close_writer = close_writer
        self._on_frames: Optional[OnFrames] = None

    # the wrapped link's identity
    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    @property
    def mac(self) -> bytes:  # type: ignore[override]
        return self.inner.mac

    @property
    def mtu(self) -> int:  # type: ignore[override]
        return self.inner.mtu

    @property
    def vnet(self) -> bool:  # type: ignore[override]
        return self.inner.vnet

    @property
    def stats(self):  # type: ignore[override]
        return self.inner.stats

    def open_reader(self, on_frames: OnFrames) -> None:
        self._on_frames = on_frames
        self.inner.open_reader(self._rx)

    def _rx(self, batch: list[RxItem]) -> None:
        ts = self.clock()
        w = self.writer
        for frame, _ in batch:
            w.write(frame, ts)
        if self._on_frames is not None:
            self._on_frames(batch)

    def attach(self, loop: Any) -> None:
        self.inner.attach(loop)

    def detach(self) -> None:
        self.inner.detach()

    def send(self, frame: Frame, gso_type: int = 0, gso_size: int = 0, csum_start: int = 0,
             csum_offset: int = 0) -> None:
        self.writer.write(frame, self.clock())
        self.inner.send(frame, gso_type, gso_size, csum_start, csum_offset)

    def close(self) -> None:
        self.inner.close()
        if self.close_writer:
            self.writer.close()

    def __getattr__(self, item: str) -> Any:
        # anything else (poll, fileno, read_kernel_stats, ...) comes from the wrapped link
        return getattr(self.inner, item)
