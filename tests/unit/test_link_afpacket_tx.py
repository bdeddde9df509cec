"""AfPacketLink's transmit error rule, without a real socket: a frame the kernel refuses the way a
full device queue or a down interface would (EAGAIN, ENOBUFS, ENETDOWN) is dropped and counted in
``tx_errors`` -- TCP retransmits it -- and the rest of a burst still goes out; any other error
(a programming or permission error) propagates."""
from __future__ import annotations

import errno

import pytest

from aiotcpstack.link.afpacket import AfPacketLink
from aiotcpstack.link.base import VNET_HDR_LEN, LinkStats


class FakeSock:
    """``sendmsg`` records the joined frame, or raises the next queued error (None: succeed)."""

    def __init__(self, errors: list) -> None:
        self.errors = errors
        self.sent: list[bytes] = []

    def sendmsg(self, parts) -> int:
        err = self.errors.pop(0) if self.errors else None
        if err is not None:
            raise err
        data = b"".join(bytes(p) for p in parts)
        self.sent.append(data)
        return len(data)


def link_with(sock: FakeSock) -> AfPacketLink:
    link = AfPacketLink.__new__(AfPacketLink)      # no socket, no namespace: only the tx state
    link._sock = sock
    link.vnet = True
    link.is_loopback = False
    link.stats = LinkStats()
    return link


HEADERS = bytes(34 + 32)


@pytest.mark.parametrize("err", [BlockingIOError(errno.EAGAIN, "again"), OSError(errno.ENOBUFS, "nobufs"),
                                 OSError(errno.ENETDOWN, "down")])
def test_burst_drops_and_counts_a_refused_frame_and_sends_the_rest(err: OSError) -> None:
    sock = FakeSock([None, err, None])
    link = link_with(sock)
    frames = [(HEADERS, [b"a" * 100], 0), (HEADERS, [b"b" * 200], 0), (HEADERS, [b"c" * 50, b"d" * 50], 0)]
    link.send_tcp_burst(34, 66, 1, frames)
    assert link.stats.tx_errors == 1 and link.stats.tx_frames == 2
    assert link.stats.tx_bytes == 2 * len(HEADERS) + 200
    assert [len(f) - VNET_HDR_LEN for f in sock.sent] == [166, 166]
    assert sock.sent[1].endswith(b"c" * 50 + b"d" * 50)


def test_single_send_drops_and_counts_a_refused_frame() -> None:
    link = link_with(FakeSock([OSError(errno.ENOBUFS, "nobufs")]))
    link.send_tcp(HEADERS[:34], HEADERS[34:], b"x" * 10)
    assert link.stats.tx_errors == 1 and link.stats.tx_frames == 0


@pytest.mark.parametrize("send", ["burst", "single"])
def test_other_errors_propagate(send: str) -> None:
    link = link_with(FakeSock([PermissionError(errno.EPERM, "not permitted")]))
    with pytest.raises(PermissionError):
        if send == "burst":
            link.send_tcp_burst(34, 66, 1, [(HEADERS, [b"a"], 0)])
        else:
            link.send_tcp(HEADERS[:34], HEADERS[34:], b"a")
    assert link.stats.tx_errors == 0
