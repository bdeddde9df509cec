"""A retransmission never carries data past SND.NXT.

Found in the lab (bulk send, offloads off, after PRR / undo were merged): in recovery, RFC 6582's
partial-ACK rule marks [ACK, ACK + MSS) lost; when the last segment sent was short, that range
reaches past SND.NXT into data written since, and the retransmission sent it.  The peer then
acknowledged beyond our SND.NXT, an ACK RFC 9293 3.10.7.4 says to drop ("ACK acks something not
yet sent": send an ACK, drop the segment) -- so every later ACK was dropped, and the connection
stalled in exponential backoff for good.
"""
from __future__ import annotations

from tcp_harness import Harness, MASK


def test_partial_ack_retransmission_stops_at_snd_nxt() -> None:
    # no SACK (RFC 6582 NewReno drives recovery), no window scaling, MSS 1000
    h = Harness()
    syn = h.establish_active(window=3056, peer_opts=h.peer_syn_opts(None, mss=1000, wscale=None, sack=False,
                                                                    ts=False))
    peer = 5001
    conn = h.conn
    assert not conn.sack_ok
    una0 = (syn.seq + 1) & MASK
    conn.send(b"a" * 3056, h.now)
    sent = h.take()
    assert [len(s.payload) for s in sent] == [1000, 1000, 1000, 56]
    nxt = (una0 + 3056) & MASK
    assert conn.snd_nxt == nxt
    # more data written; the peer's window (3056) keeps it in the buffer
    conn.send(b"b" * 10000, h.now)
    assert h.take() == []
    t = h.now
    # the first segment is lost: three duplicate ACKs -> fast retransmit
    for i in range(3):
        t += 0.001
        h.feed(t, ".", peer, una0, window=3056)
    rtx = h.take()
    assert rtx and rtx[0].seq == una0 and len(rtx[0].payload) == 1000
    # a partial ACK up to the short tail: [ACK, ACK + MSS) is "lost", but only 56 bytes of it were sent
    t += 0.001
    h.feed(t, ".", peer, (una0 + 3000) & MASK, window=56)
    out = h.take()
    data = [s for s in out if s.payload]
    assert data, out
    for s in data:
        end = (s.seq + len(s.payload)) & MASK
        assert ((nxt - end) & MASK) < 0x80000000, (s, "past SND.NXT")
    assert data[0].seq == (una0 + 3000) & MASK and len(data[0].payload) == 56
    # the peer's ACK of everything sent is accepted (not dropped as acking unsent data)
    t += 0.001
    h.feed(t, ".", peer, nxt, window=20000)
    assert conn.snd_una == nxt
