"""Read TCP segments out of a classic pcap file with the project's own ``wire/`` parsers (no scapy).

Link types: Ethernet (1, with 802.1Q tags), Linux cooked v1/v2 (113/276, ``tcpdump -i any``), raw IP
(101 / 12 / 228 / 229) and BSD loopback (0).  Little/big endian, micro- and nanosecond files.  pcapng is
refused with a hint (``tcpdump -w`` and :class:`~aiotcpstack.link.pcap.PcapWriter` write classic pcap;
``editcap -F pcap`` converts).

Frames cut by the snap length are padded with zeros up to their original length before parsing, so the
IP/TCP lengths (and so sequence spaces) stay right; the payload bytes themselves are never needed.
IPv4 header checksums are not verified (captures of offloaded traffic carry partial checksums).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import struct
from typing import BinaryIO, Iterator

from ..wire.errors import ParseError
from ..wire.ethernet import ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, parse_ethernet
from ..wire.ipv4 import parse_ipv4
from ..wire.ipv6 import parse_ipv6
from ..wire.tcp import IPPROTO_TCP, TcpOptions, parse_tcp

__all__ = ["PcapFormatError", "TcpPacket", "read_frames", "read_tcp", "flows", "select_flow"]

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
_RAW_TYPES = (12, 14, 101, 228, 229)
ETH_P_8021AD = 0x88A8


class PcapFormatError(ValueError):
    pass


@dataclasses.dataclass(slots=True)
class TcpPacket:
    ts: float
    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    length: int               # TCP payload length
    options: TcpOptions

    @property
    def src_ep(self) -> tuple[str, int]:
        return (self.src, self.sport)

    @property
    def dst_ep(self) -> tuple[str, int]:
        return (self.dst, self.dport)


def _open(path_or_file: str | BinaryIO) -> tuple[BinaryIO, bool]:
    if hasattr(path_or_file, "read"):
        return path_or_file, False  # type: ignore[return-value]
    return open(path_or_file, "rb"), True  # type: ignore[arg-type]


def read_frames(path_or_file: str | BinaryIO) -> Iterator[tuple[float, int, bytes]]:
    """Yield ``(timestamp, linktype, frame)``; truncated frames are zero-padded to their original length."""
    f, own = _open(path_or_file)
    try:
        head = f.read(24)
        if len(head) < 24:
            raise PcapFormatError("not a pcap file (shorter than the 24-byte global header)")
        magic_le = struct.unpack("<I", head[:4])[0]
        if magic_le == 0x0A0D0D0A:
            raise PcapFormatError("this is a pcapng file; write classic pcap (tcpdump -w, or "
                                  "'editcap -F pcap in.pcapng out.pcap')")
        for endian in ("<", ">"):
            magic = struct.unpack(endian + "I", head[:4])[0]
            if magic in (0xA1B2C3D4, 0xA1B23C4D):
                break
        else:
            raise PcapFormatError(f"not a pcap file (magic {head[:4].hex()})")
        scale = 1e-9 if magic == 0xA1B23C4D else 1e-6
        linktype = struct.unpack(endian + "I", head[20:24])[0] & 0x0FFFFFFF
        rec = struct.Struct(endian + "IIII")
        while True:
            rh = f.read(16)
            if len(rh) < 16:
                return
            sec, frac, incl, orig = rec.unpack(rh)
            data = f.read(incl)
            if len(data) < incl:
                return                       # file cut mid-record (capture still running): stop there
            if orig > incl:
                data += bytes(orig - incl)
            yield sec + frac * scale, linktype, data
    finally:
        if own:
            f.close()


def _l3(linktype: int, frame: bytes) -> tuple[int, memoryview] | None:
    """(ethertype, network-layer packet) or None when not IP."""
    mv = memoryview(frame)
    if linktype == LINKTYPE_ETHERNET:
        _dst, _src, etype, payload = parse_ethernet(mv)
        while etype in (ETH_P_8021Q, ETH_P_8021AD) and len(payload) >= 4:
            etype = struct.unpack_from("!H", payload, 2)[0]
            payload = payload[4:]
        return etype, payload
    if linktype == LINKTYPE_LINUX_SLL:
        if len(mv) < 16:
            return None
        return struct.unpack_from("!H", mv, 14)[0], mv[16:]
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(mv) < 20:
            return None
        return struct.unpack_from("!H", mv, 0)[0], mv[20:]
    if linktype in _RAW_TYPES:
        if not len(mv):
            return None
        v = mv[0] >> 4
        return (ETH_P_IP if v == 4 else ETH_P_IPV6 if v == 6 else 0), mv
    if linktype == LINKTYPE_NULL:
        if len(mv) < 4:
            return None
        fam = struct.unpack_from("<I", mv, 0)[0]
        if fam > 0xFFFF:
            fam = struct.unpack_from(">I", mv, 0)[0]
        return (ETH_P_IP if fam == 2 else ETH_P_IPV6 if fam in (10, 24, 28, 30) else 0), mv[4:]
    raise PcapFormatError(f"unsupported pcap link type {linktype}")


def read_tcp(path_or_file: str | BinaryIO, stats: dict[str, int] | None = None) -> list[TcpPacket]:
    """All TCP segments of the capture, in file order.  ``stats`` (optional dict) gets
    ``frames``, ``tcp``, ``other`` and ``errors`` counts."""
    out: list[TcpPacket] = []
    st = stats if stats is not None else {}
    for key in ("frames", "tcp", "other", "errors"):
        st.setdefault(key, 0)
    for ts, linktype, frame in read_frames(path_or_file):
        st["frames"] += 1
        try:
            l3 = _l3(linktype, frame)
            if l3 is None:
                st["other"] += 1
                continue
            etype, pkt = l3
            if etype == ETH_P_IP:
                ip4, seg = parse_ipv4(pkt, verify_checksum=False)
                if ip4.proto != IPPROTO_TCP or ip4.is_fragment:
                    st["other"] += 1
                    continue
                src, dst = ip4.src, ip4.dst
            elif etype == ETH_P_IPV6:
                ip6, seg = parse_ipv6(pkt)
                if ip6.next_header != IPPROTO_TCP or ip6.fragment:
                    st["other"] += 1
                    continue
                src, dst = ip6.src, ip6.dst
            else:
                st["other"] += 1
                continue
            hdr, payload = parse_tcp(seg)
        except ParseError:
            st["errors"] += 1
            continue
        st["tcp"] += 1
        out.append(TcpPacket(ts, str(ipaddress.ip_address(bytes(src))), str(ipaddress.ip_address(bytes(dst))),
                             hdr.src_port, hdr.dst_port, hdr.seq, hdr.ack, hdr.flags, hdr.window,
                             len(payload), hdr.options))
    return out


FlowKey = tuple[tuple[str, int], tuple[str, int]]


def flows(packets: list[TcpPacket]) -> dict[FlowKey, dict[str, int]]:
    """Connections (endpoint pairs, sorted) -> ``{"packets": n, "bytes": payload bytes}``."""
    out: dict[FlowKey, dict[str, int]] = {}
    for p in packets:
        a, b = p.src_ep, p.dst_ep
        key = (a, b) if a <= b else (b, a)
        d = out.setdefault(key, {"packets": 0, "bytes": 0})
        d["packets"] += 1
        d["bytes"] += p.length
    return out


def select_flow(packets: list[TcpPacket], port: int | None = None) -> FlowKey | None:
    """The flow that moved the most payload (optionally: one with ``port`` at either end)."""
    best = None
    for key, d in flows(packets).items():
        if port is not None and port not in (key[0][1], key[1][1]):
            continue
        if best is None or (d["bytes"], d["packets"]) > best[1]:
            best = (key, (d["bytes"], d["packets"]))
    return best[0] if best else None
