"""Segment-level test harness for ``TcpConnection`` on virtual time.

    h = Harness(iss=1000)                  # one connection, a fake output, a TimerWheel, a recorder
    h.conn.connect(0.0)
    syn = h.take_one()                     # the SYN, sent at t=0
    h.feed(0.05, "S.", seq=5000, ack=1001, window=65535, opts=h.peer_syn_opts())
    seg = h.take_one(); assert seg.flags == "." and seg.ack == 5001

``h.at(t)`` runs every timer due up to ``t`` *at its own deadline* (so ``Sent.t`` of a segment
produced by a timer is the timer's expiry), then sets the clock to ``t``.  ``h.feed`` = ``at`` +
``on_segment`` + ``end_batch``.  Flags are written tcpdump-style: ``S`` SYN, ``F`` FIN, ``R`` RST,
``P`` PSH, ``.`` ACK (in that order: ``"S."``, ``"FP."``).
"""
from __future__ import annotations

from dataclasses import dataclass

from aiotcpstack.mib import Counters
from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.tcp.connection import TcpConnection
from aiotcpstack.tcp.timer_wheel import TimerWheel
from aiotcpstack.wire.tcp import ACK, FIN, NO_OPTIONS, PSH, RST, SYN, URG, TcpHeader, TcpOptions

MASK = 0xFFFFFFFF
LOCAL = (bytes([10, 0, 0, 1]), 40000)
REMOTE = (bytes([10, 0, 0, 2]), 80)

_FLAG_CHARS = ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (URG, "U"), (ACK, "."))


class FrameTx(list):
    """A ``NetworkCore`` transmit function that records each frame as ``bytes`` (for tests that
    drive a core at frame level)."""

    def __call__(self, frame, gso_type=0, gso_size=0, csum_start=0, csum_offset=0):
        self.append(bytes(frame))


def flags_str(flags: int) -> str:
    return "".join(c for b, c in _FLAG_CHARS if flags & b)


def parse_flags(s: str) -> int:
    f = 0
    for ch in s:
        f |= {"S": SYN, "F": FIN, "R": RST, "P": PSH, "U": URG, ".": ACK}[ch]
    return f


@dataclass
class Sent:
    t: float
    hdr: TcpHeader
    payload: bytes

    @property
    def flags(self) -> str:
        return flags_str(self.hdr.flags)

    @property
    def seq(self) -> int:
        return self.hdr.seq

    @property
    def ack(self) -> int:
        return self.hdr.ack

    @property
    def window(self) -> int:
        return self.hdr.window

    @property
    def opts(self) -> TcpOptions:
        return self.hdr.options

    @property
    def tsval(self) -> int | None:
        ts = self.hdr.options.timestamp
        return None if ts is None else ts[0]

    @property
    def tsecr(self) -> int | None:
        ts = self.hdr.options.timestamp
        return None if ts is None else ts[1]

    def __repr__(self) -> str:
        return (f"<t={self.t:.3f} [{self.flags}] seq={self.seq} ack={self.ack} win={self.window} "
                f"len={len(self.payload)} {self.hdr.options!r}>")


class Recorder:
    """A ConnectionHandler that records every call."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.data = bytearray()
        self.on_data = None          # optional hook(conn_data) for tests that react

    def tcp_established(self) -> None:
        self.events.append(("established",))

    def tcp_data(self, data: bytes) -> None:
        self.events.append(("data", bytes(data)))
        self.data += data
        if self.on_data is not None:
            self.on_data(data)

    def tcp_eof(self) -> None:
        self.events.append(("eof",))

    def tcp_send_space(self) -> None:
        self.events.append(("send_space",))

    def tcp_urgent(self, pending: int) -> None:
        self.events.append(("urgent", pending))

    def tcp_closed(self, exc) -> None:
        self.events.append(("closed", exc))

    def names(self) -> list[str]:
        return [e[0] for e in self.events]

    @property
    def closed(self) -> list:
        return [e[1] for e in self.events if e[0] == "closed"]


class Harness:
    def __init__(self, config: TcpConfig | None = None, *, iss: int = 1000, ts_offset: int = 0,
                 now: float = 0.0, local=LOCAL, remote=REMOTE, wheel: TimerWheel | None = None,
                 counters: Counters | None = None) -> None:
        self.config = config or TcpConfig()
        self.wheel = wheel or TimerWheel(now)
        self.counters = counters if counters is not None else Counters()
        self.now = now
        self.out: list[Sent] = []
        self.released: list = []
        self.rec = Recorder()
        self.local = local
        self.remote = remote
        self.conn = TcpConnection(config=self.config, wheel=self.wheel, counters=self.counters,
                                  local=local, remote=remote, iss=iss, output=self._output,
                                  handler=self.rec, release=self.released.append,
                                  ts_offset=ts_offset, now=now)

    # ---------------------------------------------------------------- plumbing
    def _output(self, hdr: TcpHeader, payload) -> None:
        assert hdr.src_port == self.local[1] and hdr.dst_port == self.remote[1]
        self.out.append(Sent(self.now, hdr, bytes(payload)))

    def at(self, t: float) -> None:
        """Advance virtual time to ``t``, firing each timer at its deadline."""
        assert t >= self.now - 1e-12, "time goes forward"
        while True:
            ne = self.wheel.next_expiry()
            if ne is None or ne > t + 1e-12:
                break
            self.now = max(self.now, ne)
            self.wheel.advance(ne)
        self.now = t
        self.wheel.advance(t)

    def run_until(self, t: float) -> list[Sent]:
        mark = len(self.out)
        self.at(t)
        return self.out[mark:]

    def segment(self, flags: str, seq: int, ack: int = 0, window: int = 65535,
                opts: TcpOptions = NO_OPTIONS, urgent: int = 0) -> TcpHeader:
        return TcpHeader(self.remote[1], self.local[1], seq & MASK, ack & MASK, parse_flags(flags), window, opts,
                         0, urgent)

    def feed(self, t: float, flags: str, seq: int, ack: int = 0, window: int = 65535, payload: bytes = b"",
             opts: TcpOptions = NO_OPTIONS, batch_end: bool = True, urgent: int = 0) -> list[Sent]:
        """Deliver one segment at time ``t``; returns what went out because of it (timers that
        fired before ``t`` are not included: see ``run_until``)."""
        self.at(t)
        mark = len(self.out)
        self.conn.on_segment(self.segment(flags, seq, ack, window, opts, urgent), payload, t)
        if batch_end:
            self.conn.end_batch(t)
        return self.out[mark:]

    def feed_batch(self, t: float, segs: list[dict]) -> list[Sent]:
        self.at(t)
        mark = len(self.out)
        for s in segs:
            s = dict(s)
            payload = s.pop("payload", b"")
            self.conn.on_segment(self.segment(**s), payload, t)
        self.conn.end_batch(t)
        return self.out[mark:]

    def take(self) -> list[Sent]:
        out = self.out
        self.out = []
        return out

    def take_one(self) -> Sent:
        out = self.take()
        assert len(out) == 1, f"expected exactly one segment, got {out}"
        return out[0]

    # ---------------------------------------------------------------- scenarios
    def establish_active(self, peer_iss: int = 5000, *, t: float = 0.0, rtt: float = 0.01,
                         peer_opts: TcpOptions | None = None, window: int = 65535) -> Sent:
        """connect() at ``t``, SYN-ACK from the peer after ``rtt``; returns our SYN (the final
        ACK is taken out of the log)."""
        self.at(t)
        self.conn.connect(t)
        syn = self.take_one()
        if peer_opts is None:
            peer_opts = self.peer_syn_opts(syn)
        self.feed(t + rtt, "S.", peer_iss, syn.seq + 1, window=window, opts=peer_opts)
        self.take()
        assert self.conn.state == "ESTABLISHED"
        return syn

    def establish_passive(self, peer_iss: int = 5000, *, t: float = 0.0, rtt: float = 0.01,
                          peer_opts: TcpOptions | None = None, window: int = 65535) -> Sent:
        """accept_syn() of a peer SYN at ``t``, the peer's ACK after ``rtt``; returns our SYN-ACK."""
        self.at(t)
        if peer_opts is None:
            peer_opts = TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(100, 0))
        syn = self.segment("S", peer_iss, 0, window, peer_opts)
        self.conn.accept_syn(syn, t)
        synack = self.take_one()
        opts = NO_OPTIONS
        if synack.opts.timestamp is not None:
            opts = TcpOptions(timestamp=(peer_opts.timestamp[0] + 1, synack.tsval))
        self.feed(t + rtt, ".", peer_iss + 1, synack.seq + 1, window=window >> (peer_opts.wscale or 0)
                  if peer_opts.wscale is not None else window, opts=opts)
        self.take()
        assert self.conn.state == "ESTABLISHED", self.conn.state
        return synack

    def peer_syn_opts(self, syn: Sent | None = None, *, mss: int = 1460, wscale: int | None = 7,
                      sack: bool = True, ts: bool = True, tsval: int = 100) -> TcpOptions:
        """Options of a peer SYN-ACK answering ``syn`` (echoing its TSval)."""
        tsecr = syn.tsval if syn is not None and syn.tsval is not None else 0
        return TcpOptions(mss=mss, wscale=wscale, sack_permitted=sack,
                          timestamp=(tsval, tsecr) if ts else None)
