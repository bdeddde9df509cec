"""TCP header and options (RFC 9293 section 3.1; options: RFC 9293 3.2, RFC 7323, RFC 2018).

CONTRACT TYPES: ``TcpHeader``, ``TcpOptions`` and the flag constants are shared by ``tcp/`` and
``ip/``; their field names are fixed.  Parse/emit functions are filled in by the wire layer.
"""
from __future__ import annotations

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80


class TcpOptions:
    """Parsed TCP options.  ``None``/empty means "not present".

    ``timestamp`` is ``(tsval, tsecr)``; ``sack_blocks`` is a tuple of ``(left, right)`` edges.
    """

    __slots__ = ("mss", "wscale", "sack_permitted", "sack_blocks", "timestamp")

    def __init__(
        self,
        mss: int | None = None,
        wscale: int | None = None,
        sack_permitted: bool = False,
        sack_blocks: tuple[tuple[int, int], ...] = (),
        timestamp: tuple[int, int] | None = None,
    ) -> None:
        self.mss = mss
        self.wscale = wscale
        self.sack_permitted = sack_permitted
        self.sack_blocks = sack_blocks
        self.timestamp = timestamp

    def __repr__(self) -> str:
        parts = [f"{k}={getattr(self, k)!r}" for k in self.__slots__ if getattr(self, k) not in (None, False, ())]
        return f"TcpOptions({', '.join(parts)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TcpOptions) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)


NO_OPTIONS = TcpOptions()


class TcpHeader:
    """A TCP header.  ``flags`` is the bitmask of the constants above; sequence numbers are
    plain ints in [0, 2**32)."""

    __slots__ = ("src_port", "dst_port", "seq", "ack", "flags", "window", "checksum", "urgent", "options")

    def __init__(
        self,
        src_port: int,
        dst_port: int,
        seq: int,
        ack: int = 0,
        flags: int = 0,
        window: int = 0,
        options: TcpOptions = NO_OPTIONS,
        checksum: int = 0,
        urgent: int = 0,
    ) -> None:
        self.src_port = src_port
        self.dst_port = dst_port
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.options = options
        self.checksum = checksum
        self.urgent = urgent

    def __repr__(self) -> str:
        names = "".join(n for b, n in ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (ACK, "."), (URG, "U"), (ECE, "E"), (CWR, "C")) if self.flags & b)
        return (f"TcpHeader({self.src_port}->{self.dst_port} [{names}] seq={self.seq} ack={self.ack} "
                f"win={self.window} {self.options!r})")
