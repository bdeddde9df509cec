"""NetworkCore + tcp.listener.Listener at frame level: the handshake through request socks, the
accept queue (children wait with no handler, data that came with them is delivered once taken),
the simple ``on_accept`` form, SYN cookies, closing, and the receive-path backlog
(``lock_conn``/``release_conn``, a re-entrant receive during a delivery, ``TCPBacklogDrop``,
one delivery per batch)."""
from __future__ import annotations

from aiotcpstack.ip.core import BACKLOG_SEG_OVERHEAD, NetworkCore
from aiotcpstack.ip.demux import ANY
from aiotcpstack.mib import Counters
from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.tcp.listener import Listener
from aiotcpstack.tcp.timer_wheel import TimerWheel
from aiotcpstack.wire.ethernet import ETH_P_IP, build_ethernet, parse_ethernet
from aiotcpstack.wire.ipv4 import build_ipv4_header, parse_ipv4
from aiotcpstack.wire.tcp import ACK, FIN, PSH, RST, SYN, TcpHeader, TcpOptions, build_tcp, parse_tcp

from tcp_harness import FrameTx as Tx

MY_MAC = bytes.fromhex("02aa00000001")
PEER_MAC = bytes.fromhex("02bb00000002")
MY_IP = bytes([198, 18, 0, 1])
PEER_IP = bytes([198, 18, 0, 2])


class Handler:
    def __init__(self):
        self.events = []
        self.data = bytearray()
        self.on_data = None

    def tcp_established(self):
        self.events.append("est")

    def tcp_data(self, d):
        self.events.append(("data", bytes(d)))
        self.data += d
        if self.on_data is not None:
            self.on_data(d)

    def tcp_eof(self):
        self.events.append("eof")

    def tcp_send_space(self):
        pass

    def tcp_closed(self, exc):
        self.events.append(("closed", exc))


def make_core(**cfg):
    tx = Tx()
    counters = Counters()
    core = NetworkCore(MY_MAC, 1500, [(MY_IP, 24)], counters, TcpConfig(**cfg), TimerWheel(), tx, None,
                       dedicated=True, strict=True, secret=b"k" * 32)
    core.neigh.update(PEER_IP, PEER_MAC, 0.0)
    return core, tx, counters


def frame(hdr, payload=b""):
    seg = build_tcp(hdr, payload, PEER_IP, MY_IP)
    return (build_ethernet(MY_MAC, PEER_MAC, ETH_P_IP) + build_ipv4_header(PEER_IP, MY_IP, 6, len(seg)) + seg,
            False)


def out(tx):
    res = []
    for f in tx:
        _, _, et, p = parse_ethernet(f)
        if et != ETH_P_IP:
            continue
        ip, seg = parse_ipv4(p)
        hdr, data = parse_tcp(seg)
        res.append((hdr, bytes(data)))
    return res


def handshake(core, tx, sport=40000, port=8080, data=b"", flags=ACK, t=0.0, opts=None):
    """SYN, read the SYN-ACK, final ACK (+data): returns (synack, isn of the client)."""
    tx.clear()
    core.receive([frame(TcpHeader(sport, port, 1000, 0, SYN, 65535, opts or TcpOptions(mss=1460)))], t)
    (synack, _), = out(tx)
    assert synack.flags == SYN | ACK and synack.ack == 1001
    tx.clear()
    core.receive([frame(TcpHeader(sport, port, 1001, synack.seq + 1, flags, 65535), data)], t + 0.01)
    return synack


def test_syn_makes_a_request_sock_not_a_connection():
    core, tx, c = make_core()
    lst = core.listen(None, 8080, 10)
    assert isinstance(lst, Listener) and core.demux.listeners[(ANY, 8080)] is lst
    core.receive([frame(TcpHeader(40000, 8080, 1000, 0, SYN, 65535, TcpOptions(mss=1200)))], 0.0)
    assert lst.syn_queue_len == 1 and core.demux.conns == {}
    (synack, _), = out(tx)
    assert synack.flags == SYN | ACK and synack.options.mss == 1460
    assert c["OutSegs"] == 1                     # counted once (by the listener)
    tx.clear()
    core.receive([frame(TcpHeader(40000, 8080, 1001, synack.seq + 1, ACK, 65535))], 0.1)
    assert lst.syn_queue_len == 0 and lst.accept_queue_len == 1
    child = core.demux.conns[(MY_IP, 8080, PEER_IP, 40000)]
    assert child.state == "ESTABLISHED" and child.handler is None
    assert core.routes[child].peer_mss == 1200
    assert c["PassiveOpens"] == 1 and tx == []
    assert lst.accept() is child and lst.accept() is None


def test_data_on_the_final_ack_waits_in_the_accept_queue_then_is_delivered_once():
    core, tx, c = make_core()
    lst = core.listen(None, 8080, 10)
    handshake(core, tx, data=b"hello", flags=ACK | PSH)
    core.receive([frame(TcpHeader(40000, 8080, 1006, out_ack(core), ACK | PSH | FIN, 65535), b" world")], 0.2)
    child = lst.accept()
    assert child.state == "CLOSE_WAIT" and child.unread_bytes == 11
    h = Handler()
    child.handler = h
    h.tcp_established()
    core.wake(child, 0.3)                         # outside a batch: delivered right away
    assert h.events == ["est", ("data", b"hello world"), "eof"]


def out_ack(core):
    conn = next(iter(core.demux.conns.values()))
    return conn.snd_nxt


def test_on_accept_form_hands_over_at_once_and_delivers_with_the_batch():
    core, tx, c = make_core()
    handlers = []

    def on_accept(conn):
        handlers.append(Handler())
        return handlers[-1]

    lst = core.listen(MY_IP, 8080, 10, on_accept)
    synack = handshake(core, tx, data=b"abc", flags=ACK | PSH)
    assert lst.accept_queue_len == 0
    h, = handlers
    assert h.events == ["est", ("data", b"abc")]
    (ack, _), = out(tx)                           # the data was ACKed by end_batch
    assert ack.flags == ACK and ack.ack == 1004 and ack.seq == synack.seq + 1


def test_on_accept_returning_none_aborts_and_counts():
    core, tx, c = make_core()
    core.listen(None, 8080, 10, lambda conn: None)
    handshake(core, tx)
    (rst, _), = out(tx)
    assert rst.flags & RST and c["ListenDrops"] == 1 and core.demux.conns == {}


def test_accept_queue_overflow_drops_final_ack_then_recovers():
    core, tx, c = make_core()
    lst = core.listen(None, 8080, 1)              # up to backlog + 1 = 2 children wait
    for i in range(2):
        handshake(core, tx, sport=40000 + i)
    assert lst.accept_queue_len == 2
    synack = handshake(core, tx, sport=40002)
    assert lst.accept_queue_len == 2 and lst.syn_queue_len == 1
    assert c["ListenOverflows"] == 1 and c["ListenDrops"] == 1 and tx == []
    lst.accept()
    core.receive([frame(TcpHeader(40002, 8080, 1001, synack.seq + 1, ACK, 65535), b"x")], 1.0)
    assert lst.accept_queue_len == 2 and lst.syn_queue_len == 0


def test_syncookies_always_end_to_end():
    core, tx, c = make_core(syncookies=2)
    lst = core.listen(None, 8080, 10)
    opts = TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(12345, 0))
    tx.clear()
    core.receive([frame(TcpHeader(40000, 8080, 1000, 0, SYN, 65535, opts))], 0.0)
    (synack, _), = out(tx)
    assert lst.syn_queue_len == 0 and c["SyncookiesSent"] == 1
    tsval = synack.options.timestamp[0]
    core.receive([frame(TcpHeader(40000, 8080, 1001, synack.seq + 1, ACK, 65535,
                                  TcpOptions(timestamp=(12346, tsval))), b"cookie data")], 0.05)
    assert c["SyncookiesRecv"] == 1
    child = lst.accept()
    assert child.state == "ESTABLISHED" and child.sack_ok and child.ws_ok and child.unread_bytes == 11


def test_listener_close_resets_queued_children_and_frees_the_port():
    core, tx, c = make_core()
    lst = core.listen(None, 8080, 10)
    handshake(core, tx)
    tx.clear()
    lst.close(1.0)
    (rst, _), = out(tx)
    assert rst.flags & RST and core.demux.conns == {} and core.demux.listeners == {}
    assert not core.demux.port_in_use(8080)


def test_ephemeral_listen_port_and_eaddrinuse():
    core, tx, c = make_core()
    lst = core.listen(None, 0, 10)
    assert lst.port >= 32768
    import pytest
    with pytest.raises(OSError):
        core.listen(MY_IP, lst.port, 10)


# ------------------------------------------------------------------------------ receive backlog
def established(core, tx):
    h = Handler()
    core.listen(None, 8080, 10, lambda conn: h)
    synack = handshake(core, tx)
    conn = core.demux.conns[(MY_IP, 8080, PEER_IP, 40000)]
    return conn, h, synack.seq + 1


def test_one_delivery_per_batch():
    core, tx, c = make_core()
    conn, h, ack = established(core, tx)
    tx.clear()
    core.receive([frame(TcpHeader(40000, 8080, 1001 + 100 * i, ack, ACK | PSH, 65535), bytes([65 + i]) * 100)
                  for i in range(5)], 1.0)
    assert h.events[1:] == [("data", b"A" * 100 + b"B" * 100 + b"C" * 100 + b"D" * 100 + b"E" * 100)]


def test_reentrant_receive_during_delivery_goes_to_the_backlog():
    core, tx, c = make_core()
    conn, h, ack = established(core, tx)
    seen_during = []

    def on_data(d):
        if d == b"first":
            # a receive that runs while the protocol callback is in progress: the connection is
            # owned, so the segment is queued, not processed under the callback's feet
            core.receive([frame(TcpHeader(40000, 8080, 1006, ack, ACK | PSH, 65535), b"second")], 1.1)
            seen_during.append(conn.rcv_nxt)

    h.on_data = on_data
    core.receive([frame(TcpHeader(40000, 8080, 1001, ack, ACK | PSH, 65535), b"first")], 1.0)
    assert seen_during == [1006]                  # not processed during the callback
    assert h.events[1:] == [("data", b"first"), ("data", b"second")]
    assert conn.rcv_nxt == 1012 and c["TCPBacklogDrop"] == 0


def test_lock_conn_backlog_is_bounded_and_processed_on_release():
    core, tx, c = make_core(rcvbuf=16384, sndbuf=1024)   # all that fits is in the window
    conn, h, ack = established(core, tx)
    core.lock_conn(conn)
    core.lock_conn(conn)                          # nests
    seg = 1000
    per = seg + BACKLOG_SEG_OVERHEAD
    fit = (conn.rcvbuf + conn.config.sndbuf) // per
    frames = [frame(TcpHeader(40000, 8080, 1001 + seg * i, ack, ACK, 65535), bytes([i]) * seg)
              for i in range(fit + 3)]
    core.receive(frames, 1.0)
    assert conn.rcv_nxt == 1001 and h.events == ["est"]
    assert c["TCPBacklogDrop"] == 3
    core.release_conn(conn, 1.1)
    assert conn.rcv_nxt == 1001                   # still held once
    tx.clear()
    core.release_conn(conn, 1.2)
    assert conn.rcv_nxt == 1001 + seg * fit
    assert h.events[1:] == [("data", b"".join(bytes([i]) * seg for i in range(fit)))]
    assert any(hdr.flags == ACK and hdr.ack == 1001 + seg * fit for hdr, _ in out(tx))
    assert core._owned == {}
