"""link/ring.py: the TPACKET_V2 slot walk, over a plain buffer written the way ``tpacket_rcv`` does.

The kernel side is simulated here (``Kernel.fill``): a ``struct tpacket2_hdr`` at the slot's
start, the frame at ``tp_mac``, the ``virtio_net_hdr`` right before it, ``tp_status`` last.  The
real ring is exercised in tests/live/test_afpacket.py.
"""
from __future__ import annotations

import mmap
import struct

import pytest

from aiotcpstack.link import ring as ringmod
from aiotcpstack.link.ring import (
    TP_STATUS_COPY,
    TP_STATUS_KERNEL,
    TP_STATUS_USER,
    RxRing,
    block_size_for,
    frame_offset,
    slot_size_for,
)

HDR = struct.Struct("=IIIHH")
NEEDS_CSUM, DATA_VALID = 1, 2
TP_STATUS_CSUMNOTREADY = 8


class Kernel:
    """Writes slots as tpacket_rcv does, in ring order."""

    def __init__(self, ring: RxRing, mem: bytearray) -> None:
        self.ring = ring
        self.mem = mem
        self.head = 0

    def status(self, slot: int) -> int:
        return struct.unpack_from("=I", self.mem, self.ring._offs[slot])[0]

    def fill(self, frame: bytes, vnet_flags: int = 0, *, extra_status: int = 0, tp_len: int | None = None) -> int:
        """Put ``frame`` in the next slot (refusing a slot the user still holds, as
        packet_lookup_frame does); returns the slot index."""
        slot = self.head
        off = self.ring._offs[slot]
        assert self.status(slot) == TP_STATUS_KERNEL, "slot still owned by user space"
        mac = frame_offset(self.ring.vnet)
        snap = min(len(frame), self.ring.slot_size - mac)
        self.mem[off + mac:off + mac + snap] = frame[:snap]
        if self.ring.vnet:
            self.mem[off + mac - 10:off + mac] = struct.pack("=BBHHHH", vnet_flags, 0, 0, 0, 0, 0)
        HDR.pack_into(self.mem, off, 0, len(frame) if tp_len is None else tp_len, snap, mac, mac + 14)
        struct.pack_into("=I", self.mem, off, TP_STATUS_USER | extra_status)     # last, as smp_mb(); status
        self.head = (slot + 1) % self.ring.slots
        return slot


def make_ring(blocks: int = 2, vnet: bool = True, mtu: int = 1500) -> tuple[RxRing, Kernel, bytearray]:
    slot = slot_size_for(mtu, vnet)
    block = block_size_for(slot)
    mem = bytearray(block * blocks)
    ring = RxRing(mem, slot, block, vnet)
    return ring, Kernel(ring, mem), mem


def frame(i: int, n: int = 1514) -> bytes:
    return bytes([i & 0xFF]) * 6 + bytes(6) + b"\x08\x00" + bytes((i + k) & 0xFF for k in range(n - 14))


# ---------------------------------------------------------------------------------------------------
def test_slot_and_block_sizes() -> None:
    # tpacket_rcv: netoff = TPACKET_ALIGN(TPACKET2_HDRLEN + max(maclen, 16)) (+ vnet header), macoff
    # = netoff - maclen; TPACKET2_HDRLEN = 32 + sizeof(struct sockaddr_ll) = 52
    assert frame_offset(False) == 80 - 14 and frame_offset(True) == 90 - 14
    slot = slot_size_for(1500, True)
    assert slot % 16 == 0 and frame_offset(True) + 1514 + 4 <= slot < frame_offset(True) + 1514 + 4 + 16
    assert slot_size_for(65536, True) == 16384           # lo: big frames go through the copy path
    for s in (slot, 2048, 4096, 9104, 16384, slot_size_for(576, False)):
        b = block_size_for(s)
        assert b % 4096 == 0 and b & (b - 1) == 0 and b >= s
        assert (b % s) * 32 <= b                          # at most 1/32 of a block unused
    assert block_size_for(1600) == 8192 and block_size_for(2048) == 4096


def test_slots_never_straddle_blocks() -> None:
    ring, _, mem = make_ring()
    assert ring.slots == 10
    assert ring._offs[:6] == [0, 1600, 3200, 4800, 6400, 8192]
    assert all(off % ring.block_size + ring.slot_size <= ring.block_size for off in ring._offs)


def test_take_in_order_until_a_kernel_slot_with_trusted_flags() -> None:
    ring, k, _ = make_ring()
    k.fill(frame(1), NEEDS_CSUM)
    k.fill(frame(2), DATA_VALID)
    k.fill(frame(3), 0)
    out = ring.take(64, False, 8)
    assert [bytes(f) for f, _ in out] == [frame(1), frame(2), frame(3)]
    assert [t for _, t in out] == [True, True, False]
    assert all(type(t) is bool for _, t in out)
    assert all(type(f) is memoryview for f, _ in out)
    assert ring.held == 3 and ring.head == 3 and ring.last_bytes == 3 * 1514
    assert ring.take(64, False, 8) == [] and ring.held == 3     # nothing new: nothing taken


def test_no_vnet_header_means_untrusted() -> None:
    ring, k, mem = make_ring(blocks=1, vnet=False)
    # where a vnet header's flags byte would be, whatever the slot held before
    mem[frame_offset(False) - 10] = 0xFF
    k.fill(frame(1))
    ((f, t),) = ring.take(64, False, 8)
    assert bytes(f) == frame(1) and t is False


def test_a_frame_at_another_mac_offset_is_read_from_its_own_header() -> None:
    # (tp_mac differs from the Ethernet one, e.g. a longer link-layer header): the frame and the
    # vnet flags before it are read where the slot header says
    ring, k, mem = make_ring()
    k.fill(frame(1), 0)
    slot = k.fill(frame(2), 0)
    k.fill(frame(3), DATA_VALID)
    off = ring._offs[slot]
    mac = frame_offset(True) + 16
    mem[off + mac:off + mac + 1000] = frame(4, 1000)
    mem[off + mac - 10] = NEEDS_CSUM
    HDR.pack_into(mem, off, TP_STATUS_USER, 1000, 1000, mac, mac + 14)
    out = ring.take(64, False, 8)
    assert [(bytes(f), t) for f, t in out] == [(frame(1), False), (frame(4, 1000), True), (frame(3), True)]
    assert ring.last_bytes == 2 * 1514 + 1000


def test_views_stay_until_release_which_gives_back_exactly_the_held_slots() -> None:
    ring, k, mem = make_ring()
    for i in range(4):
        k.fill(frame(i))
    out = ring.take(2, False, 8)                 # limit: two of four
    assert len(out) == 2 and ring.held == 2
    assert [k.status(i) & TP_STATUS_USER for i in range(4)] == [1, 1, 1, 1]
    views = [f for f, _ in out]
    assert ring.release() == 2
    assert [k.status(i) for i in range(4)] == [0, 0, TP_STATUS_USER, TP_STATUS_USER]
    # the kernel may now reuse those two slots: only then do the old views change
    assert bytes(views[0]) == frame(0)
    more = ring.take(64, False, 8)
    assert [bytes(f) for f, _ in more] == [frame(2), frame(3)]
    assert ring.release() == 2 and ring.release() == 0


def test_wraps_around_the_ring() -> None:
    ring, k, _ = make_ring()
    seen: list[bytes] = []
    n = 0
    for rnd in range(5):                          # 5 x 7 frames over 10 slots
        for _ in range(7):
            k.fill(frame(n, 100 + n))
            n += 1
        out = ring.take(64, True, 8)
        seen += [f for f, _ in out]
        assert ring.release() == 7
    assert seen == [frame(i, 100 + i) for i in range(35)]
    assert all(k.status(i) == TP_STATUS_KERNEL for i in range(ring.slots))


def test_a_fully_held_ring_stops_the_walk() -> None:
    ring, k, _ = make_ring()
    for i in range(ring.slots):
        k.fill(frame(i, 60))
    assert len(ring.take(64, False, 8)) == ring.slots and ring.held == ring.slots
    assert ring.take(64, False, 8) == []          # the walk must not lap and re-deliver slot 0
    assert ring.release() == ring.slots
    assert all(k.status(i) == TP_STATUS_KERNEL for i in range(ring.slots))


def test_copy_slots_become_placeholders_up_to_max_copies() -> None:
    ring, k, _ = make_ring()
    k.fill(frame(1))
    k.fill(frame(2, 9000), extra_status=TP_STATUS_COPY)   # too big for a slot: head only + queued
    k.fill(frame(3))
    k.fill(frame(4, 9000), extra_status=TP_STATUS_COPY)
    k.fill(frame(5))
    out = ring.take(64, False, 1)
    # the second COPY slot would be one too many: the walk stops before it, it stays for later
    assert [None if x is None else bytes(x[0]) for x in out] == [frame(1), None, frame(3)]
    assert ring.copies == [1] and ring.held == 3
    assert ring.last_bytes == 2 * 1514
    ring.release()
    out = ring.take(64, False, 1)
    assert out[0] is None and bytes(out[1][0]) == frame(5) and ring.copies == [0]


def test_truncated_frames_are_counted_and_skipped_but_released() -> None:
    ring, k, _ = make_ring()
    k.fill(frame(1))
    k.fill(frame(2, 3000))                        # no COPY flag: tp_snaplen < tp_len
    k.fill(frame(3))
    out = ring.take(64, False, 8)
    assert [bytes(f) for f, _ in out] == [frame(1), frame(3)]
    assert ring.truncated == 1 and ring.held == 3
    assert ring.release() == 3 and k.status(1) == TP_STATUS_KERNEL


def test_copy_true_gives_bytes_and_other_status_bits_do_not_matter() -> None:
    ring, k, _ = make_ring()
    k.fill(frame(7), NEEDS_CSUM, extra_status=TP_STATUS_CSUMNOTREADY | (1 << 29))
    ((f, t),) = ring.take(64, True, 8)
    assert type(f) is bytes and f == frame(7) and t is True


def test_close_refuses_to_unmap_while_views_live() -> None:
    # the real ring is an mmap: it cannot be unmapped under a live view (which would then point
    # at nothing); close() says so and the mapping goes with the last view
    slot = slot_size_for(1500, True)
    block = block_size_for(slot)
    mem = mmap.mmap(-1, 2 * block)
    ring = RxRing(mem, slot, block, True)
    k = Kernel(ring, mem)   # type: ignore[arg-type]
    k.fill(frame(1))
    out = ring.take(64, False, 8)
    assert ring.close() is False and not mem.closed
    assert bytes(out[0][0]) == frame(1)           # still readable
    del out
    mem2 = mmap.mmap(-1, 2 * block)
    ring2 = RxRing(mem2, slot, block, True)
    k2 = Kernel(ring2, mem2)   # type: ignore[arg-type]
    k2.fill(frame(1))
    assert ring2.take(64, True, 8)[0][0] == frame(1)
    assert ring2.close() is True and mem2.closed


def test_bad_geometry_is_refused() -> None:
    with pytest.raises(ValueError):
        RxRing(bytearray(8192), 1601, 8192, True)
    with pytest.raises(ValueError):
        RxRing(bytearray(8000), 1600, 8192, True)


def test_supported_only_on_x86_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ringmod.sys, "platform", "linux")
    monkeypatch.setattr(ringmod.platform, "machine", lambda: "aarch64")
    assert not ringmod.supported()
    monkeypatch.setattr(ringmod.platform, "machine", lambda: "x86_64")
    assert ringmod.supported()
