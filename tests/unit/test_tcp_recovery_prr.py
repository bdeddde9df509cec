"""PRR (RFC 9937, obsoleting RFC 6937; Linux tcp_cwnd_reduction): the sending sequence during
fast recovery, the slow-start reduction bound, and random loss patterns end to end on the
segment-level harness (delivery byte-exact, cwnd = ssthresh at the end, sends bounded by PRR)."""
from __future__ import annotations

import random

from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.tcp.congestion.prr import Prr
from aiotcpstack.tcp.connection import TcpConnection
from aiotcpstack.wire.tcp import TcpOptions

from tcp_harness import Harness

M = 1460


def test_rfc6937_example_reno_sends_one_segment_every_other_ack():
    # RFC 6937 section 6 (RFC 9937 section 5) example: 20 segments in flight, one lost, Reno's
    # ssthresh = 10: each ACK delivers one segment; PRR sends on every other ACK (the first is
    # the fast retransmit) and pipe ends at ssthresh -- RFC 6675 instead sent nothing for half
    # a round trip, then everything at once.
    prr = Prr()
    prr.start(20 * M)
    ssthresh = 10 * M
    pipe = 19 * M                                  # 20 outstanding, the lost one not counted
    sends = []
    for _ in range(19):
        pipe -= M                                  # one segment delivered (SACKed)
        n = prr.sndcnt(M, pipe, ssthresh, M, safe_ack=False)
        k = n // M                                 # the sender sends whole segments
        prr.sent(k * M)
        pipe += k * M
        sends.append(k)
    # the proportional part: one segment per two ACKs while pipe > ssthresh; then (pipe at
    # ssthresh) PRR-SSRB holds pipe there
    assert sends[:16] == [1, 0] * 8 and sum(sends) == 10
    assert pipe == ssthresh


def test_cubic_ratio_sends_seven_per_ten_acks():
    prr = Prr()
    prr.start(20 * M)
    ssthresh = 14 * M                              # beta 0.7
    pipe = 19 * M
    out = 0
    for i in range(1, 11):
        pipe -= M
        n = prr.sndcnt(M, pipe, ssthresh, M, safe_ack=False)
        k = n // M
        prr.sent(k * M)
        pipe += k * M
        out += k
        assert prr.prr_out <= -(-prr.prr_delivered * ssthresh // (20 * M * M)) * M     # never ahead of PRR
    assert out == 7


def test_fast_retransmit_forced_even_if_nothing_delivered():
    prr = Prr()
    prr.start(10 * M)
    assert prr.sndcnt(0, 9 * M, 5 * M, M, safe_ack=False) == M
    prr.sent(M)
    assert prr.sndcnt(0, 9 * M, 5 * M, M, safe_ack=False) == 0


def test_ssrb_after_heavy_loss():
    # pipe far below ssthresh (a burst of losses): the conservative bound sends what was
    # delivered; a SafeACK (SND.UNA advanced, no new loss) one SMSS more (RFC 9937 PRR-SSRB);
    # never beyond ssthresh - pipe
    prr2 = Prr()
    prr2.start(20 * M)
    prr2.sent(M)                                   # the fast retransmit went out
    assert prr2.sndcnt(2 * M, 2 * M, 10 * M, M, safe_ack=False) == 2 * M      # max(2 - 1, 2)
    assert prr2.sndcnt(2 * M, 2 * M, 10 * M, M, safe_ack=True) == 4 * M       # 4 - 1 + 1
    assert prr2.sndcnt(5 * M, 8 * M, 10 * M, M, safe_ack=True) == 2 * M       # capped at ssthresh - pipe


# ---------------------------------------------------------------- on the connection

RENO = TcpConfig(timestamps=False, sack=True, window_scaling=False, congestion_control="reno",
                 initial_cwnd=20, tlp=False)


def est(cfg=RENO):
    h = Harness(cfg, iss=1000)
    h.establish_active(5000, rtt=0.01, peer_opts=TcpOptions(mss=M, sack_permitted=True))
    return h


def seg(i):
    return 1001 + i * M


def test_connection_sends_per_prr_during_recovery():
    h = est()
    h.conn.send(b"p" * 60 * M, 0.02)
    assert len(h.take()) == 20
    sent = []
    t = 0.03
    for k in range(2, 21):                         # segment 0 lost; 1..19 SACKed one by one
        t += 1e-4
        out = h.feed(t, ".", 5001, seg(0), opts=TcpOptions(sack_blocks=((seg(1), seg(k)),)))
        sent.append(len(out))
    cc, prr = h.conn.cc, h.conn.prr
    assert h.conn.ca_state == 3 and prr is not None
    # PRR: never ahead of ceil(prr_delivered * ssthresh / RecoverFS) (pipe > ssthresh here)
    assert prr.prr_out <= -(-prr.prr_delivered * cc.ssthresh // (prr.recover_fs * M)) * M
    # about ssthresh/RecoverFS of what was delivered went out, spread over the ACKs: no burst,
    # and no silence (RFC 6675 alone sent nothing for ten ACKs here, until pipe fell below cwnd)
    assert max(sent) == 1
    assert "000" not in "".join(map(str, sent[2:]))
    ssthresh = cc.ssthresh
    h.feed(t + 0.01, ".", 5001, h.conn.snd_nxt)                          # all acknowledged
    assert h.conn.ca_state == 0 and cc.cwnd == ssthresh                 # RFC 9937: cwnd = ssthresh


def _peer_run(h: Harness, total: int, lost: set[int]) -> tuple[bytes, list[str]]:
    """A SACK receiver for ``h``'s connection: drops the first transmission of the segments in
    ``lost`` (by start offset), ACKs every arrival with its SACK blocks; returns the bytes
    received in order and the violations of PRR's bounds seen after each ACK."""
    got: dict[int, bytes] = {}
    seen_first: set[int] = set()
    rcv_nxt = seg(0)
    bad: list[str] = []
    t = h.now
    pending = h.take()
    while rcv_nxt != seg(0) + total:
        if not pending:
            t = max(t, h.wheel.next_expiry() or t) + 1e-4
            pending = h.run_until(t)
            assert pending, "stalled"
            continue
        s = pending.pop(0)
        if not s.payload:
            continue
        off = s.seq - seg(0)
        if off not in seen_first:
            seen_first.add(off)
            if off in lost:
                continue
        got.setdefault(s.seq, s.payload)
        while rcv_nxt in got:
            rcv_nxt += len(got[rcv_nxt])
        blocks = []
        for start in sorted((q for q in got if q > rcv_nxt), reverse=True):
            end = start + len(got[start])
            if blocks and blocks[-1][0] == end:
                blocks[-1] = (start, blocks[-1][1])
            else:
                blocks.append((start, end))
        t += 1e-4
        conn = h.conn
        out = h.feed(t, ".", 5001, rcv_nxt, opts=TcpOptions(sack_blocks=tuple(blocks[:3])))
        if conn.ca_state == 3 and conn.prr is not None:
            prr, cc = conn.prr, conn.cc
            if prr.prr_out > max(-(-prr.prr_delivered * cc.ssthresh // prr.recover_fs), prr.prr_delivered + M,
                                 M) + M:
                bad.append(f"prr_out {prr.prr_out} delivered {prr.prr_delivered}")
        pending += out
    data = b"".join(got[q] for q in sorted(got))
    return data, bad


def test_random_loss_patterns_keep_prr_bounds_and_deliver_everything(monkeypatch):
    exits: list = []
    orig_exit = TcpConnection._exit_recovery

    def watch(self, now, undo=None):
        was = self.ca_state
        orig_exit(self, now, undo)
        if was == 3 and not undo:
            exits.append((self.cc.cwnd, self.cc.ssthresh, self._pipe()))
    monkeypatch.setattr(TcpConnection, "_exit_recovery", watch)
    rng = random.Random(6937)
    recoveries = 0
    for trial in range(25):
        h = est()
        total = 40 * M
        payload = bytes(rng.randrange(256) for _ in range(total))
        h.at(0.02)
        h.conn.send(payload, 0.02)
        lost = {i * M for i in range(40) if rng.random() < 0.15}
        exits.clear()
        data, bad = _peer_run(h, total, lost)
        assert data == payload, trial
        assert not bad, (trial, bad[:3])
        for cwnd, ssthresh, pipe in exits:
            assert cwnd == ssthresh and pipe <= ssthresh, (trial, exits)
        recoveries += len(exits)
    assert recoveries >= 10                        # the patterns did exercise fast recovery
