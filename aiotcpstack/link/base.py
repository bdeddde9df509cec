"""The Link interface: the one boundary through which Ethernet frames enter and leave the stack.

Everything above ``link/`` sees a link only through this interface, so the same network core runs
over a real ``AF_PACKET`` socket, the deterministic simulated link and a pcap tap.  The receive side
is push-based and batched (``on_frames(batch)`` once per drained batch) because the stack does its
per-batch work (delivering data once, sending one ACK) at the end of a batch, like the kernel's NAPI
poll followed by the prequeue flush.

The virtio-net header constants live here (not in ``afpacket.py``) because the simulated link can
emulate GSO too and callers need the ``GSO_*`` values without importing socket code.
"""
from __future__ import annotations

import abc
import errno
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Union

Frame = Union[bytes, memoryview]
#: One received frame and whether its checksums may be trusted without verification.
RxItem = tuple[Frame, bool]
#: Receive callback: called once per drained batch.
OnFrames = Callable[[list[RxItem]], None]

# --- struct virtio_net_hdr (include/uapi/linux/virtio_net.h), used with PACKET_VNET_HDR ---------
#: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset -- native endian, 10 bytes.
VNET_HDR = struct.Struct("=BBHHHH")
VNET_HDR_LEN = VNET_HDR.size  # 10

VIRTIO_NET_HDR_F_NEEDS_CSUM = 1  # checksum is partial: csum_start/csum_offset say where to fill it
VIRTIO_NET_HDR_F_DATA_VALID = 2  # checksum already validated (by the kernel or a device)

GSO_NONE = 0
GSO_TCPV4 = 1  # VIRTIO_NET_HDR_GSO_TCPV4
GSO_UDP = 3  # VIRTIO_NET_HDR_GSO_UDP (UFO; not used by the stack)
GSO_TCPV6 = 4  # VIRTIO_NET_HDR_GSO_TCPV6
GSO_ECN = 0x80  # VIRTIO_NET_HDR_GSO_ECN flag bit

#: Receive buffer size.  veth hands AF_PACKET whole 64 KB GRO/TSO super-frames even at MTU 1500,
#: so a buffer the size of the MTU would silently truncate them.
RX_BUFFER_SIZE = 65600 + VNET_HDR_LEN + 64

ETH_HLEN = 14


class LinkError(OSError):
    """Base class for link set-up errors (an ``OSError`` so callers catching OSError still work)."""


class NoSuchInterfaceError(LinkError):
    """The named interface does not exist (in the given network namespace)."""

    def __init__(self, interface: str, netns: str | None) -> None:
        where = f"network namespace {netns!r}" if netns else "this process's network namespace"
        super().__init__(errno.ENODEV, f"no network interface {interface!r} in {where}")
        self.interface = interface
        self.netns = netns


class NoSuchNetnsError(LinkError):
    """The named network namespace does not exist."""

    def __init__(self, netns: str, path: str) -> None:
        super().__init__(
            errno.ENOENT,
            f"network namespace {netns!r} does not exist ({path} not found; create it with `ip netns add {netns}`)",
        )
        self.netns = netns


@dataclass
class LinkStats:
    """Counters kept by every link (cheap integers, updated on the hot path)."""

    rx_frames: int = 0
    rx_bytes: int = 0
    tx_frames: int = 0
    tx_bytes: int = 0
    rx_batches: int = 0
    rx_truncated: int = 0  # frames longer than the receive buffer (should stay 0)
    tx_errors: int = 0  # send() raised (ENOBUFS, ...)
    kernel_drops: int = 0  # PACKET_STATISTICS tp_drops, accumulated (the kernel resets on read)
    extra: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        d = {k: v for k, v in self.__dict__.items() if k != "extra"}
        d.update(self.extra)
        return d


class Link(abc.ABC):
    """A frame I/O endpoint (see ``docs/contracts.md``, section ``link/``).

    Attributes every implementation sets: ``name``, ``mac`` (6 bytes), ``mtu`` (IP MTU, i.e.
    without the Ethernet header), ``vnet`` (True when GSO/checksum offload is usable on ``send``),
    and ``stats`` (:class:`LinkStats`).
    """

    name: str
    mac: bytes
    mtu: int
    vnet: bool
    stats: LinkStats

    @abc.abstractmethod
    def open_reader(self, on_frames: OnFrames) -> None:
        """Register the receive callback ``on_frames([(frame, csum_trusted), ...])``.

        Frames passed to the callback are only valid for the duration of the call when they are
        memoryviews (buffers may be reused); the callee copies what it keeps.
        """

    @abc.abstractmethod
    def attach(self, loop: Any) -> None:
        """Start delivering frames from ``loop`` (AF_PACKET: ``loop.add_reader``)."""

    @abc.abstractmethod
    def send(
        self,
        frame: Frame,
        gso_type: int = 0,
        gso_size: int = 0,
        csum_start: int = 0,
        csum_offset: int = 0,
    ) -> None:
        """Transmit one Ethernet frame (or a GSO super-frame when ``gso_type`` is non-zero).

        With ``csum_start``/``csum_offset`` (offsets from the start of the Ethernet frame) the
        checksum field holds the folded pseudo-header sum and the kernel (or the simulated peer)
        completes it -- this needs ``vnet``.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Stop receiving and release the underlying resources.  Idempotent."""

    def detach(self) -> None:
        """Stop delivering frames from the loop (the link stays open).  Default: nothing to do."""

    def __enter__(self) -> "Link":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
