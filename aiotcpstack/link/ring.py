"""Zero-syscall receive: a ``PACKET_RX_RING`` (TPACKET_V2) mapped into our address space.

Why: with ``recvmmsg`` every batch costs a syscall and the kernel copies each frame a second time,
in *our* process, out of the socket queue into our buffer.  With a receive ring the kernel copies
each frame once, in the softirq that delivers it (``tpacket_rcv``, on veth the *sender's* CPU),
into a slot we have mapped; we find it by reading the slot's ``tp_status`` -- no syscall while
frames are waiting -- and give the slot back by writing ``TP_STATUS_KERNEL`` into it.

Why TPACKET_V2 and not V3: V3 hands blocks to user space only when a block is full or its retire
timer fires (milliseconds), which adds that much latency to a lone segment.  V2 hands over every
frame as soon as it is written.

Why the slots are small (MTU-sized) although veth passes 64 KB GRO/TSO super-frames up to packet
sockets: V2 slots have one fixed size, and slots as big as a super-frame would hold ~60 frames in a
few MB -- far too few for a burst of MTU frames (every frame the ring cannot take is dropped, i.e.
wire loss for TCP).  So the ring is sized for MTU frames, and ``PACKET_COPY_THRESH`` makes the
kernel queue a clone of any frame too big for a slot on the socket's ordinary receive queue (the
slot gets a truncated head and ``TP_STATUS_COPY``, in the same order as the queue, both under the
receive-queue lock in ``tpacket_rcv``); :class:`RxRing` only reports where those are and the link
reads them with ``recv_into``.

Layout (``tpacket_rcv``, net/packet/af_packet.c): each slot starts with a ``struct tpacket2_hdr``
(``tp_status``, ``tp_len``, ``tp_snaplen``, ``tp_mac``, ``tp_net``, ...); the frame starts at
``tp_mac`` and, with ``PACKET_VNET_HDR``, the ``struct virtio_net_hdr`` sits right before it at
``tp_mac - 10`` (``virtio_net_hdr_from_skb(skb, h.raw + macoff - sizeof(struct
virtio_net_hdr), ...)``).  ``tp_snaplen < tp_len`` means the frame was truncated (no room and no
copy: the socket's receive buffer was full).

Memory ordering: the kernel writes the frame, then ``smp_mb()``, then ``tp_status``.  We read
``tp_status`` before the frame; x86 never reorders loads with loads, so no barrier is needed
there.  Pure Python has no read barrier to offer, which is why :func:`supported` says no on other
architectures (the link then uses ``recvmmsg``).
"""
from __future__ import annotations

import mmap
import platform
import socket
import struct
import sys
from typing import Any, Optional

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_COPY_THRESH = 7
PACKET_VERSION = 10
TPACKET_V2 = 1

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_COPY = 2

#: struct tpacket_req: block size, block count, frame size, frame count
_REQ = struct.Struct("=IIII")
#: the first fields of struct tpacket2_hdr: tp_status, tp_len, tp_snaplen, tp_mac
_HDR = struct.Struct("=IIIH")
#: TPACKET_ALIGN(sizeof(struct tpacket2_hdr)) + sizeof(struct sockaddr_ll): where the kernel puts
#: the link-layer address, and so where a frame can start at the earliest (tpacket_rcv's netoff)
_TPACKET2_HDRLEN = 32 + 20
_TPACKET_ALIGNMENT = 16
_VNET_HDR_LEN = 10
_VNET_TRUSTED = 1 | 2      # VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID

#: the trusted flag per vnet flags byte (a lookup instead of a mask and a compare per frame:
#: take + release of 256 frames 450 -> 410 ns a frame, PERF_LOG step 20); without a vnet header
#: nothing is trusted
_TRUST = tuple(f & _VNET_TRUSTED != 0 for f in range(256))
_NO_TRUST = (False,) * 256

_X86 = {"x86_64", "amd64", "i386", "i486", "i586", "i686", "x86"}


def supported() -> bool:
    """True where a receive ring is safe to read from Python: Linux on x86 (see the module
    docstring on memory ordering)."""
    return sys.platform.startswith("linux") and platform.machine().lower() in _X86


def _align(n: int) -> int:
    return (n + _TPACKET_ALIGNMENT - 1) & ~(_TPACKET_ALIGNMENT - 1)


def frame_offset(vnet: bool, maclen: int = 14) -> int:
    """Where ``tpacket_rcv`` puts the first byte of a frame in a slot (``macoff``) for a
    ``SOCK_RAW`` socket with no ``PACKET_RESERVE``."""
    netoff = _align(_TPACKET2_HDRLEN + max(maclen, 16)) + (_VNET_HDR_LEN if vnet else 0)
    return netoff - maclen


def slot_size_for(mtu: int, vnet: bool) -> int:
    """The smallest slot that holds an MTU-sized frame with a VLAN tag (1600 bytes for MTU 1500),
    at most 16 KiB: bigger frames (lo's 64 KiB MTU, super-frames) take the copy path."""
    return min(_align(frame_offset(vnet) + 14 + 4 + mtu), 16384)


def block_size_for(slot_size: int, page: int = mmap.PAGESIZE) -> int:
    """The smallest power-of-two number of pages (the kernel allocates each block as one
    ``get_order`` allocation, so other sizes waste the rest of it) that slots tile with at most
    1/32 left over: one page for 2 KiB slots, two (five slots) for 1600-byte slots."""
    block = page
    while block < slot_size or (block % slot_size) * 32 > block:
        block <<= 1
    return block


class RxRing:
    """The slots of a TPACKET_V2 receive ring laid over ``mem`` (the socket's mapped ring, see
    :func:`make`; any writable buffer in tests): ``slot_size`` bytes per slot, ``block_size``
    bytes per block, the slots of a block back to back from its start (``packet_lookup_frame``).

    :meth:`take` walks the slots the kernel has filled, from where the last walk stopped;
    :meth:`release` hands the slots taken since the last release back to the kernel.  Between the
    two, the memoryviews :meth:`take` returned point into the ring and are stable.
    """

    __slots__ = ("slot_size", "block_size", "slots", "vnet", "mm", "buf", "_status", "_offs", "_walk",
                 "_macoff", "_unpack", "head", "held", "copies", "truncated", "last_bytes")

    def __init__(self, mem: Any, slot_size: int, block_size: int, vnet: bool) -> None:
        if slot_size & (_TPACKET_ALIGNMENT - 1) or slot_size < _TPACKET2_HDRLEN:
            raise ValueError(f"slot size {slot_size} must be a multiple of {_TPACKET_ALIGNMENT} "
                             f"and >= {_TPACKET2_HDRLEN}")
        if block_size < slot_size or len(mem) % block_size:
            raise ValueError(f"{len(mem)} bytes are not whole blocks of {block_size} holding {slot_size}-byte slots")
        per_block = block_size // slot_size
        self.slot_size = slot_size
        self.block_size = block_size
        self.vnet = vnet
        self.mm = mem
        self.buf = memoryview(mem).cast("B")
        self._status = self.buf.cast("I")
        self._offs = [b + i * slot_size for b in range(0, len(mem), block_size) for i in range(per_block)]
        self.slots = len(self._offs)
        self._walk = self._offs + self._offs
        # the slot header and the byte at tp_mac - 10 of an Ethernet frame: the vnet header's flags
        # (without a vnet header, a byte of the sockaddr_ll before the frame, unused)
        self._macoff = frame_offset(vnet)
        self._unpack = struct.Struct(f"=IIIH{self._macoff - _VNET_HDR_LEN - _HDR.size}xB").unpack_from
        self.head = 0           # the next slot to look at (the kernel fills them in this order)
        self.held = 0           # slots head - held .. head - 1 are ours until release()
        self.copies: list[int] = []     # indices (in take's result) of frames to recv() instead
        self.truncated = 0      # frames the kernel cut short (counted, not delivered)
        self.last_bytes = 0     # bytes in the frames take() returned

    def take(self, limit: int, copy: bool, max_copies: int) -> list[Any]:
        """Up to ``limit`` filled slots as ``(frame, trusted)`` items (``bytes`` if ``copy``, else
        memoryviews into the ring, valid until :meth:`release`).

        A slot whose frame is on the socket queue instead (``TP_STATUS_COPY``) gets a ``None``
        placeholder and its index in :attr:`copies`; at most ``max_copies`` of them per call.
        Truncated frames are counted in :attr:`truncated` and skipped.  Slots are not handed back
        here (see :meth:`release`).

        Per slot this is the hot loop of the receive path: one ``unpack_from`` reads the slot
        header and, where every frame starts (``tp_mac`` is the same for every Ethernet frame,
        :func:`frame_offset`), the vnet header's flags byte."""
        buf = self.buf
        head = self.head
        room = self.slots - self.held
        # the slots in walk order, from head, without wrap-around arithmetic per slot (_walk is
        # the offsets twice over)
        walk = self._walk[head:head + (limit if limit < room else room)]
        unpack = self._unpack
        macoff = self._macoff
        vnet = self.vnet
        copies = self.copies
        copies.clear()
        out: list[Any] = []
        append = out.append
        nbytes = 0
        skipped = 0
        trust = _TRUST if vnet else _NO_TRUST
        for off in walk:
            status, tp_len, snaplen, mac, vflags = unpack(buf, off)
            if status & 3 == 1 and snaplen == tp_len and mac == macoff:      # TP_STATUS_USER, whole
                start = off + mac
                nbytes += snaplen
                if copy:
                    append((buf[start:start + snaplen].tobytes(), trust[vflags]))
                else:
                    append((buf[start:start + snaplen], trust[vflags]))
            elif not status & TP_STATUS_USER:
                break
            elif status & TP_STATUS_COPY:
                if len(copies) >= max_copies:
                    break
                copies.append(len(out))
                append(None)
            elif snaplen == tp_len:              # (a link-layer header of another length)
                start = off + mac
                nbytes += snaplen
                append((buf[start:start + snaplen].tobytes() if copy else buf[start:start + snaplen],
                        vnet and buf[start - _VNET_HDR_LEN] & _VNET_TRUSTED != 0))
            else:
                skipped += 1
        n = len(out) + skipped
        self.truncated += skipped
        head += n
        if head >= self.slots:
            head -= self.slots
        self.head = head
        self.held += n
        self.last_bytes = nbytes
        return out

    def release(self) -> int:
        """Hand every slot taken since the last release back to the kernel (``tp_status =
        TP_STATUS_KERNEL``, which is what ``packet_lookup_frame`` waits for); returns how many."""
        held = self.held
        if not held:
            return 0
        status = self._status
        offs = self._offs
        i = self.head - held
        if i < 0:
            i += self.slots
            for off in offs[i:]:
                status[off >> 2] = TP_STATUS_KERNEL
            i = 0
        for off in offs[i:self.head]:
            status[off >> 2] = TP_STATUS_KERNEL
        self.held = 0
        return held

    def close(self) -> bool:
        """Unmap the ring; False (still mapped, unmapped when the last view goes) if memoryviews
        into it are still alive."""
        self.held = 0
        try:
            self._status.release()
            self.buf.release()
        except BufferError:
            return False
        close = getattr(self.mm, "close", None)
        if close is not None:
            try:
                close()
            except BufferError:
                return False
        return True


def make(sock: socket.socket, mtu: int, vnet: bool, nbytes: int) -> Optional[RxRing]:
    """Install a receive ring of about ``nbytes`` (whole blocks, at least one) with slots for
    ``mtu`` on ``sock`` and map it; None where the architecture or the kernel says no (the caller
    reads with ``recvmmsg`` then).

    ``PACKET_VNET_HDR`` (``vnet``) and ``PACKET_VERSION`` must be set before the ring (the kernel
    answers EBUSY afterwards).  Installing the ring purges the socket's receive queue
    (``packet_set_ring``), so frames queued before are gone.
    """
    if not supported() or nbytes <= 0:
        return None
    slot = slot_size_for(mtu, vnet)
    block = block_size_for(slot)
    blocks = max(1, nbytes // block)
    size = blocks * block
    try:
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        # any non-zero value: queue a clone of a frame too big for a slot on the socket
        # (tpacket_rcv; without it the frame would only be truncated)
        sock.setsockopt(SOL_PACKET, PACKET_COPY_THRESH, 1)
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, _REQ.pack(block, blocks, slot, blocks * (block // slot)))
    except OSError:
        _undo(sock)
        return None
    prot = mmap.PROT_READ | mmap.PROT_WRITE
    try:
        if sys.version_info >= (3, 13):
            # trackfd=False: otherwise the mmap holds a dup() of the socket, which then lives on
            # (and keeps receiving) after close() until the mmap is unmapped
            mm = mmap.mmap(sock.fileno(), size, mmap.MAP_SHARED, prot, trackfd=False)
        else:
            mm = mmap.mmap(sock.fileno(), size, mmap.MAP_SHARED, prot)
    except OSError:
        _undo(sock)
        return None
    return RxRing(mm, slot, block, vnet)


def _undo(sock: socket.socket) -> None:
    """Remove a half-made ring and go back to TPACKET_V1 (plain recvmsg works either way)."""
    for opt, val in ((PACKET_RX_RING, _REQ.pack(0, 0, 0, 0)), (PACKET_VERSION, 0)):
        try:
            sock.setsockopt(SOL_PACKET, opt, val)
        except OSError:
            pass
