"""link/mmsg.py: recvmmsg through ctypes, checked on an AF_UNIX datagram socketpair (no root)."""
from __future__ import annotations

import os
import socket

import pytest

from aiotcpstack.link import mmsg


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_one_call_takes_several_datagrams_in_order(pair) -> None:
    a, b = pair
    mm = mmsg.make(8, 2048)
    assert mm is not None, "recvmmsg is in glibc on every Linux we support"
    sent = [os.urandom(n) for n in (1, 100, 1500, 2048, 7)]
    for d in sent:
        a.send(d)
    got = mm.recv(b.fileno(), 0)
    assert got == len(sent)
    for i, d in enumerate(sent):
        assert mm.length(i) == len(d)
        assert bytes(mm.views[i][:mm.length(i)]) == d


def test_lengths_reads_all_lengths_at_once(pair) -> None:
    a, b = pair
    mm = mmsg.make(8, 4096)
    sizes = [3, 1500, 1, 4000, 77, 2, 900]
    for n in sizes:
        a.send(os.urandom(n))
    got = mm.recv(b.fileno(), 0)
    assert got == len(sizes)
    assert list(mm.lengths(got)) == sizes == [mm.length(i) for i in range(got)]
    assert list(mm.lengths(3)) == sizes[:3] and mm.lengths(0) == ()
    a.send(b"z" * 10)                      # a later, shorter batch: only its own length
    assert mm.recv(b.fileno(), 0) == 1 and mm.lengths(1) == (10,)


def test_nothing_queued_is_zero_not_an_error(pair) -> None:
    _a, b = pair
    mm = mmsg.make(4, 256)
    assert mm.recv(b.fileno(), 0) == 0


def test_at_most_n_per_call_and_the_rest_stays_queued(pair) -> None:
    a, b = pair
    mm = mmsg.make(3, 64)
    for i in range(5):
        a.send(bytes([i]) * 10)
    assert mm.recv(b.fileno(), 0) == 3
    assert [bytes(mm.views[i][:1]) for i in range(3)] == [b"\0", b"\1", b"\2"]
    assert mm.recv(b.fileno(), 0) == 2
    assert bytes(mm.views[0][:1]) == b"\3" and bytes(mm.views[1][:1]) == b"\4"


def test_msg_trunc_reports_the_real_length(pair) -> None:
    a, b = pair
    mm = mmsg.make(2, 16)
    a.send(b"x" * 100)
    assert mm.recv(b.fileno(), socket.MSG_TRUNC) == 1
    assert mm.length(0) == 100            # larger than the slot: the caller counts it truncated


def test_errors_raise_oserror_with_errno() -> None:
    mm = mmsg.make(2, 16)
    r, w = os.pipe()
    os.close(w)
    try:
        with pytest.raises(OSError) as ei:
            mm.recv(r, 0)                 # not a socket
        assert ei.value.errno == 88       # ENOTSOCK
    finally:
        os.close(r)
