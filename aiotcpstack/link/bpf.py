"""Classic BPF (``SO_ATTACH_FILTER``) program builder for the AF_PACKET receive filter.

Why a filter at all: an ``ETH_P_ALL`` packet socket sees every frame on the interface, including
the host's own unrelated traffic.  Each frame that reaches Python costs a syscall slot, a copy and
interpreter time, so the kernel should drop what the stack will never use *before* it is queued.
Classic BPF is JIT-compiled by the kernel and needs no extra dependency.

The program is built from labels and symbolic jumps (classic BPF only has 8-bit relative
conditional offsets; the assembler resolves them and refuses programs whose jumps do not fit).
A small interpreter (:func:`run_filter`) lets the filter logic be unit-tested without root.
"""
from __future__ import annotations

import ctypes
import ipaddress
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Optional, Union

# --- opcodes (include/uapi/linux/filter.h, bpf_common.h) ------------------------------------------
BPF_LD, BPF_LDX, BPF_ST, BPF_STX, BPF_ALU, BPF_JMP, BPF_RET, BPF_MISC = range(8)
BPF_W, BPF_H, BPF_B = 0x00, 0x08, 0x10
BPF_IMM, BPF_ABS, BPF_IND, BPF_MEM, BPF_LEN, BPF_MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET = 0x00, 0x10, 0x20, 0x30, 0x40
BPF_AND = 0x50
BPF_K, BPF_X = 0x00, 0x08
BPF_TAX, BPF_TXA = 0x00, 0x80

SKF_AD_OFF = -0x1000
SKF_AD_PROTOCOL = 0
SKF_AD_PKTTYPE = 4

# sll_pkttype / skb->pkt_type values (include/uapi/linux/if_packet.h)
PACKET_HOST = 0
PACKET_BROADCAST = 1
PACKET_MULTICAST = 2
PACKET_OTHERHOST = 3
PACKET_OUTGOING = 4

SO_ATTACH_FILTER = 26
SO_DETACH_FILTER = 27
SO_LOCK_FILTER = 44

#: Snap length returned by an accepting program: larger than any (GSO/GRO) frame we can receive.
ACCEPT_ALL = 0x40000

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
IPPROTO_TCP = 6

#: One assembled instruction: (code, jt, jf, k) -- the layout of ``struct sock_filter``.
Insn = tuple[int, int, int, int]
_SOCK_FILTER = struct.Struct("=HBBI")

Target = Optional[str]  # a label name, or None for "next instruction"


@dataclass
class _Pending:
    code: int
    jt: Target
    jf: Target
    k: int
    ja: Target = None  # for BPF_JA: target label (k is computed)


class Program:
    """Tiny assembler: append instructions, use labels as jump targets, then :meth:`assemble`."""

    def __init__(self) -> None:
        self._items: list[Union[_Pending, str]] = []

    # -- emission -----------------------------------------------------------------------------
    def label(self, name: str) -> "Program":
        self._items.append(name)
        return self

    def ld_abs(self, size: int, offset: int) -> "Program":
        """A <- packet[offset] (size is BPF_W/BPF_H/BPF_B)."""
        return self._emit(BPF_LD | size | BPF_ABS, k=offset & 0xFFFFFFFF)

    def ld_ind(self, size: int, offset: int) -> "Program":
        """A <- packet[X + offset]."""
        return self._emit(BPF_LD | size | BPF_IND, k=offset)

    def ldx_msh(self, offset: int) -> "Program":
        """X <- 4 * (packet[offset] & 0xf): the IPv4 header length."""
        return self._emit(BPF_LDX | BPF_B | BPF_MSH, k=offset)

    def ld_pkttype(self) -> "Program":
        return self.ld_abs(BPF_W, SKF_AD_OFF + SKF_AD_PKTTYPE)

    def jeq(self, k: int, jt: Target = None, jf: Target = None) -> "Program":
        return self._emit(BPF_JMP | BPF_JEQ | BPF_K, jt, jf, k & 0xFFFFFFFF)

    def jset(self, k: int, jt: Target = None, jf: Target = None) -> "Program":
        return self._emit(BPF_JMP | BPF_JSET | BPF_K, jt, jf, k & 0xFFFFFFFF)

    def jge(self, k: int, jt: Target = None, jf: Target = None) -> "Program":
        return self._emit(BPF_JMP | BPF_JGE | BPF_K, jt, jf, k & 0xFFFFFFFF)

    def ja(self, target: str) -> "Program":
        self._items.append(_Pending(BPF_JMP | BPF_JA, None, None, 0, ja=target))
        return self

    def ret(self, k: int) -> "Program":
        return self._emit(BPF_RET | BPF_K, k=k)

    def _emit(self, code: int, jt: Target = None, jf: Target = None, k: int = 0) -> "Program":
        self._items.append(_Pending(code, jt, jf, k))
        return self

    # -- assembly -----------------------------------------------------------------------------
    def assemble(self) -> list[Insn]:
        labels: dict[str, int] = {}
        insns: list[_Pending] = []
        for item in self._items:
            if isinstance(item, str):
                if item in labels:
                    raise ValueError(f"duplicate BPF label {item!r}")
                labels[item] = len(insns)
            else:
                insns.append(item)

        def rel(i: int, target: Target, limit: int) -> int:
            if target is None:
                return 0
            if target not in labels:
                raise ValueError(f"undefined BPF label {target!r}")
            off = labels[target] - (i + 1)
            if off < 0:
                raise ValueError("classic BPF cannot jump backwards")
            if off > limit:
                raise ValueError(f"BPF jump to {target!r} too far ({off} > {limit}); use fewer addresses/ports")
            return off

        out: list[Insn] = []
        for i, p in enumerate(insns):
            if p.ja is not None:
                out.append((p.code, 0, 0, rel(i, p.ja, 0xFFFFFFFF)))
            else:
                out.append((p.code, rel(i, p.jt, 255), rel(i, p.jf, 255), p.k))
        if len(out) > 4096:  # BPF_MAXINSNS
            raise ValueError("BPF program longer than 4096 instructions")
        return out


def build_filter(
    *,
    mac: Optional[bytes] = None,
    ipv4: Optional[Iterable[Union[bytes, str]]] = None,
    ipv6: Optional[Iterable[Union[bytes, str]]] = None,
    tcp_ports: Optional[Iterable[int]] = None,
    ip_protocols: Optional[Iterable[int]] = None,
    accept_arp: bool = True,
    check_pkttype: bool = True,
) -> list[Insn]:
    """Build the stack's receive filter.

    Always: only IPv4, IPv6 and (if ``accept_arp``) ARP ethertypes; with ``check_pkttype`` frames
    the kernel classified as PACKET_OTHERHOST (not for our MAC, seen in promiscuous mode) or
    PACKET_OUTGOING (our or the host's own transmissions) are dropped.
    ``mac``: additionally require destination MAC == ``mac`` or a group (broadcast/multicast) MAC.
    ``ipv4`` / ``ipv6``: None = any destination; otherwise only these destinations (IPv6 multicast
    ff00::/8 is always accepted because NDP needs it).  An empty list rejects that family.
    ``ip_protocols``: None = any; otherwise only these IPv4 protocols / IPv6 next headers.
    ``tcp_ports``: None = any; otherwise TCP segments must have one of these destination ports
    (IPv4 non-first fragments and IPv6 packets with extension headers pass: the stack decides).
    """
    v4 = None if ipv4 is None else [_addr(a, 4) for a in ipv4]
    v6 = None if ipv6 is None else [_addr(a, 16) for a in ipv6]
    protos = None if ip_protocols is None else sorted(set(ip_protocols))
    ports = None if tcp_ports is None else sorted(set(tcp_ports))

    p = Program()
    if check_pkttype:
        p.ld_pkttype()
        p.jeq(PACKET_OUTGOING, "reject")
        p.jeq(PACKET_OTHERHOST, "reject")
    if mac is not None:
        if len(mac) != 6:
            raise ValueError("mac must be 6 bytes")
        p.ld_abs(BPF_B, 0).jset(0x01, "mac_ok")  # group address (broadcast/multicast)
        p.ld_abs(BPF_W, 0).jeq(int.from_bytes(mac[:4], "big"), None, "reject")
        p.ld_abs(BPF_H, 4).jeq(int.from_bytes(mac[4:], "big"), None, "reject")
        p.label("mac_ok")
    p.ld_abs(BPF_H, 12)
    p.jeq(ETH_P_IP, "ipv4")
    p.jeq(ETH_P_IPV6, "ipv6")
    if accept_arp:
        p.jeq(ETH_P_ARP, "accept")
    p.ja("reject")

    # ---- IPv4 ----
    p.label("ipv4")
    if v4 is not None:
        p.ld_abs(BPF_W, 30)
        for a in v4:
            p.jeq(int.from_bytes(a, "big"), "v4_dst_ok")
        p.ja("reject")
        p.label("v4_dst_ok")
    if protos is not None or ports is not None:
        p.ld_abs(BPF_B, 23)
        if ports is not None:
            p.jeq(IPPROTO_TCP, "v4_tcp")
        if protos is not None:
            for proto in protos:
                if ports is None or proto != IPPROTO_TCP:
                    p.jeq(proto, "accept")
            p.ja("reject")
        else:
            p.ja("accept")
        if ports is not None:
            p.label("v4_tcp")
            if protos is not None and IPPROTO_TCP not in protos:
                p.ja("reject")
            p.ld_abs(BPF_H, 20).jset(0x1FFF, "accept")  # non-first fragment: no TCP header
            p.ldx_msh(14)
            p.ld_ind(BPF_H, 14 + 2)
            _port_checks(p, ports)
    else:
        p.ja("accept")

    # ---- IPv6 ----
    p.label("ipv6")
    if v6 is not None:
        p.ld_abs(BPF_B, 38).jeq(0xFF, "v6_dst_ok")  # multicast (NDP solicited-node, all-nodes)
        for i, a in enumerate(v6):
            nxt = f"v6_next_{i}"
            for w in range(4):
                p.ld_abs(BPF_W, 38 + 4 * w).jeq(int.from_bytes(a[4 * w:4 * w + 4], "big"), None, nxt)
            p.ja("v6_dst_ok")
            p.label(nxt)
        p.ja("reject")
        p.label("v6_dst_ok")
    if protos is not None or ports is not None:
        p.ld_abs(BPF_B, 20)
        if ports is not None:
            p.jeq(IPPROTO_TCP, "v6_tcp")
        if protos is not None:
            for proto in protos:
                if ports is None or proto != IPPROTO_TCP:
                    p.jeq(proto, "accept")
            # extension headers (hop-by-hop 0, routing 43, fragment 44, dest-opts 60): let through
            for ext in (0, 43, 44, 60):
                p.jeq(ext, "accept")
            p.ja("reject")
        else:
            p.ja("accept")
        if ports is not None:
            p.label("v6_tcp")
            if protos is not None and IPPROTO_TCP not in protos:
                p.ja("reject")
            p.ld_abs(BPF_H, 54 + 2)
            _port_checks(p, ports)
    else:
        p.ja("accept")

    p.label("accept").ret(ACCEPT_ALL)
    p.label("reject").ret(0)
    return p.assemble()


def _port_checks(p: Program, ports: Sequence[int]) -> None:
    for port in ports:
        p.jeq(port, "accept")
    p.ja("reject")


def _addr(a: Union[bytes, str], size: int) -> bytes:
    if isinstance(a, str):
        a = ipaddress.ip_address(a).packed
    a = bytes(a)
    if len(a) != size:
        raise ValueError(f"address {a!r} is not {size} bytes")
    return a


def pack_program(insns: Sequence[Insn]) -> bytes:
    """The program as an array of ``struct sock_filter``."""
    return b"".join(_SOCK_FILTER.pack(*i) for i in insns)


def attach_filter(sock: "socket.socket", insns: Sequence[Insn]) -> None:  # noqa: F821
    """``setsockopt(SO_ATTACH_FILTER)`` with a ``struct sock_fprog`` pointing at the program.

    The kernel copies the program during the call, so the ctypes buffer only has to live until
    ``setsockopt`` returns.
    """
    raw = pack_program(insns)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("HL", len(insns), ctypes.addressof(buf))
    sock.setsockopt(1, SO_ATTACH_FILTER, fprog)  # SOL_SOCKET


def run_filter(insns: Sequence[Insn], frame: bytes, pkttype: int = PACKET_HOST, protocol: int = 0) -> int:
    """Interpret a classic BPF program (the subset :class:`Program` emits) on ``frame``.

    Returns what the kernel would: 0 = drop, otherwise the snap length.  Out-of-bounds loads drop,
    as in the kernel.
    """
    A = X = 0
    pc = 0
    n = len(frame)

    def load(off: int, size: int) -> Optional[int]:
        if off >= (1 << 31):  # negative (ancillary) offsets
            off -= 1 << 32
        if off == SKF_AD_OFF + SKF_AD_PKTTYPE:
            return pkttype
        if off == SKF_AD_OFF + SKF_AD_PROTOCOL:
            return protocol
        if off < 0 or off + size > n:
            return None
        return int.from_bytes(frame[off:off + size], "big")

    sizes = {BPF_W: 4, BPF_H: 2, BPF_B: 1}
    while pc < len(insns):
        code, jt, jf, k = insns[pc]
        pc += 1
        cls = code & 0x07
        if cls == BPF_LD:
            size = sizes[code & 0x18]
            mode = code & 0xE0
            v = load(k if mode == BPF_ABS else X + k, size)
            if v is None:
                return 0
            A = v
        elif cls == BPF_LDX:
            v = load(k, 1)
            if v is None:
                return 0
            X = 4 * (v & 0x0F)
        elif cls == BPF_JMP:
            op = code & 0xF0
            if op == BPF_JA:
                pc += k
                continue
            if op == BPF_JEQ:
                cond = A == k
            elif op == BPF_JGT:
                cond = A > k
            elif op == BPF_JGE:
                cond = A >= k
            elif op == BPF_JSET:
                cond = bool(A & k)
            else:
                raise ValueError(f"unsupported jump {code:#x}")
            pc += jt if cond else jf
        elif cls == BPF_RET:
            return k
        else:
            raise ValueError(f"unsupported BPF opcode {code:#x}")
    return 0
