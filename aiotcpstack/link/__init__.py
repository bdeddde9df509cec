"""Frame I/O: the Link interface and its implementations (AF_PACKET, simulated, pcap tap).

``AfPacketLink`` is imported lazily by callers (``from aiotcpstack.link.afpacket import ...``) so
that the sans-IO tiers and the simulated link import nothing Linux-specific.
"""
from .base import (
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    VIRTIO_NET_HDR_F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VNET_HDR_LEN,
    Link,
    LinkError,
    LinkStats,
    NoSuchInterfaceError,
    NoSuchNetnsError,
)
from .pcap import PcapLink, PcapWriter
from .sim import SimClock, SimLink, SimNetwork

__all__ = [
    "GSO_ECN", "GSO_NONE", "GSO_TCPV4", "GSO_TCPV6", "VIRTIO_NET_HDR_F_DATA_VALID",
    "VIRTIO_NET_HDR_F_NEEDS_CSUM", "VNET_HDR_LEN", "Link", "LinkError", "LinkStats",
    "NoSuchInterfaceError", "NoSuchNetnsError", "PcapLink", "PcapWriter", "SimClock", "SimLink",
    "SimNetwork",
]
