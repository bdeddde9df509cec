"""IPv4 options (wire/ipv4_options.py) against scapy's ``IPOption_*`` classes as the oracle:
headers built by scapy are compiled where scapy says each option is; what we record into a
received Record Route / Timestamp, the answer's options (``echo_options``: a source route
reversed, RFC 1122 3.2.1.8) and the options we build into our own headers read back through
scapy as expected; malformed options give the ICMP parameter-problem pointer Linux's
``__ip_options_compile`` gives; the application's form (``IP_OPTIONS``) round-trips through
``undo_options``."""
from __future__ import annotations

import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import (IP, IPOption_EOL, IPOption_LSRR, IPOption_NOP, IPOption_Router_Alert,
                               IPOption_RR, IPOption_SSRR, IPOption_Timestamp)

from aiotcpstack.wire import ipv4_options as o
from aiotcpstack.wire.ipv4 import build_ipv4_header, parse_ipv4


def a(s: str) -> bytes:
    return socket.inet_aton(s)


ME, PEER, R1, R2 = "198.18.0.1", "198.18.0.2", "198.18.0.9", "198.18.0.10"


def options_of(pkt) -> bytes:
    hdr, _ = parse_ipv4(bytes(pkt))
    return hdr.options


def test_offsets_where_scapy_puts_the_options() -> None:
    pkt = IP(src=PEER, dst=ME, options=[IPOption_NOP(), IPOption_RR(routers=["0.0.0.0"] * 2),
                                        IPOption_Router_Alert(), IPOption_LSRR(routers=[ME], pointer=4),
                                        IPOption_Timestamp(flg=0, timestamp=0, pointer=5)])
    raw = options_of(pkt)
    opt = o.compile_options(raw, received=False)
    # NOP(1) RR(11) RA(4) LSRR(7) TS(8) = 31 -> padded 32
    assert (opt.rr, opt.router_alert, opt.srr, opt.ts) == (1, 12, 16, 23)
    assert opt.optlen == 32 and opt.rr_needaddr and opt.ts_needtime and not opt.ts_needaddr
    assert opt.faddr == a(ME) and not opt.is_strictroute


def test_received_record_route_and_timestamps_get_our_entry() -> None:
    """As Linux on input (``rt`` set): our address in the next RR slot, our timestamp (flag 0),
    address + timestamp (flag 1); the pointers move on; scapy reads them back."""
    pkt = IP(src=PEER, dst=ME, options=[IPOption_RR(routers=[R1, "0.0.0.0", "0.0.0.0"], pointer=8),
                                        IPOption_Timestamp(flg=1, internet_address="0.0.0.0", timestamp=0,
                                                           pointer=5)])
    opt = o.compile_options(options_of(pkt), received=True, our_addr=a(ME), timestamp=0x1234)
    back = IP(bytes(pkt)[:20] + bytes(opt.data)).options   # (scapy parses the option area)
    rr, ts = back[0], back[1]
    assert rr.routers == [R1, ME, "0.0.0.0"] and rr.pointer == 12
    assert ts.internet_address == ME and ts.timestamp == 0x1234 and ts.pointer == 13
    # timestamps only
    pkt = IP(src=PEER, dst=ME, options=[IPOption_Timestamp(flg=0, timestamp=0, pointer=5)])
    opt = o.compile_options(options_of(pkt), received=True, our_addr=a(ME), timestamp=99)
    assert bytes(opt.data)[2] == 9 and int.from_bytes(bytes(opt.data)[4:8], "big") == 99


def test_timestamp_prespecified_and_overflow() -> None:
    # flag 3 naming another host's unicast address: left for that host (inet_addr_type == RTN_UNICAST)
    pkt = IP(src=PEER, dst=ME, options=[IPOption_Timestamp(flg=3, internet_address=R1, timestamp=0, pointer=5)])
    raw = options_of(pkt)
    opt = o.compile_options(raw, received=True, our_addr=a(ME), timestamp=5, is_local=lambda x: x == a(ME))
    assert bytes(opt.data) == raw and not opt.ts_needtime
    # ... naming ours (RTN_LOCAL): our timestamp, the pointer past the pair
    pkt = IP(src=PEER, dst=ME, options=[IPOption_Timestamp(flg=3, internet_address=ME, timestamp=0, pointer=5)])
    opt = o.compile_options(options_of(pkt), received=True, our_addr=a(ME), timestamp=5,
                            is_local=lambda x: x == a(ME))
    assert opt.ts_needtime and bytes(opt.data)[2] == 13 and bytes(opt.data)[8:12] == (5).to_bytes(4, "big")
    # ... a non-unicast one (0.0.0.0) too
    pkt = IP(src=PEER, dst=ME, options=[IPOption_Timestamp(flg=3, internet_address="0.0.0.0", timestamp=0,
                                                           pointer=5)])
    opt = o.compile_options(options_of(pkt), received=True, our_addr=a(ME), timestamp=5)
    assert opt.ts_needtime and bytes(opt.data)[2] == 13 and bytes(opt.data)[8:12] == (5).to_bytes(4, "big")
    # full: the overflow count goes up; at 15 it is an error pointing at the flags octet
    full = bytes((68, 8, 9, 0x20, 0, 0, 0, 1))
    opt = o.compile_options(full, received=True, our_addr=a(ME))
    assert bytes(opt.data)[3] == 0x30
    with pytest.raises(o.IpOptionError) as e:
        o.compile_options(bytes((68, 8, 9, 0xF0, 0, 0, 0, 1)), received=True, our_addr=a(ME))
    assert e.value.pointer == 20 + 3


@pytest.mark.parametrize("raw, pointer", [
    (bytes((7, 1, 0, 0)), 20 + 0),                       # length < 2
    (bytes((7, 9, 4, 0, 0, 0, 0, 0)), 20 + 0),           # length past the area
    (bytes((7, 7, 3, 0, 0, 0, 0, 0)), 20 + 2),           # RR pointer < 4
    (bytes((7, 6, 4, 0, 0, 0, 0, 0)), 20 + 2),           # RR pointer at a partial slot
    (bytes((131, 2, 0, 0)), 20 + 1),                     # LSRR shorter than 3
    (bytes((131, 7, 3, 0, 0, 0, 0, 0)), 20 + 2),         # LSRR pointer < 4
    (bytes((131, 3, 4, 137, 3, 4, 0, 0)), 20 + 3),       # a second source route
    (bytes((68, 3, 5, 0)), 20 + 1),                      # TS shorter than 4
    (bytes((68, 8, 4, 0, 0, 0, 0, 0)), 20 + 2),          # TS pointer < 5
    (bytes((68, 8, 5, 1, 0, 0, 0, 0)), 20 + 2),          # TS flag 1 without room for the pair
    (bytes((7, 3, 4, 7, 3, 4, 0, 0)), 20 + 3),           # a second RR
    (bytes((148, 2, 0, 0)), 20 + 1),                     # Router Alert shorter than 4
    (bytes((1, 1, 1, 7)), 20 + 3),                       # a type octet with no length octet
])
def test_malformed_options_point_where_linux_points(raw: bytes, pointer: int) -> None:
    with pytest.raises(o.IpOptionError) as e:
        o.compile_options(raw, received=True, our_addr=a(ME))
    assert e.value.pointer == pointer


def test_padding_after_eol_is_zeroed_and_unknown_options_skipped() -> None:
    opt = o.compile_options(bytes((130, 4, 0, 0, 0, 1, 2, 3)), received=True, our_addr=a(ME))
    assert bytes(opt.data) == bytes((130, 4, 0, 0, 0, 0, 0, 0)) and opt.srr == opt.rr == opt.ts == -1


def test_received_source_route_reversed() -> None:
    """A completed LSRR from PEER through R1 then R2 (each recorded its address): the answer
    goes to R2 (the hop next to us) with the route [R1, PEER] (RFC 1122 3.2.1.8)."""
    for cls, code in ((IPOption_LSRR, 131), (IPOption_SSRR, 137)):
        pkt = IP(src=PEER, dst=ME, options=[cls(routers=[R1, R2], pointer=12)])
        opt = o.compile_options(options_of(pkt), received=True, our_addr=a(ME))
        echo = o.echo_options(opt, a(PEER))
        assert echo.faddr == a(R2) and echo.is_strictroute == (code == 137)
        hdr = build_ipv4_header(a(ME), echo.faddr, 6, 0, options=o.build_options(echo, a(PEER), a(ME), 0))
        back = IP(hdr)
        assert back.dst == R2 and back.ihl == 8
        (srr,) = [x for x in back.options if x.option == code & 0x1F]
        assert srr.routers == [R1, PEER] and srr.pointer == 4
        parse_ipv4(hdr)                     # (its header checksum verified)
    # not traversed yet (pointer 4, as a sender whose route ends at us sends it): nothing to reverse
    pkt = IP(src=PEER, dst=ME, options=[IPOption_LSRR(routers=[ME], pointer=4)])
    echo = o.echo_options(o.compile_options(options_of(pkt), received=True, our_addr=a(ME)), a(PEER))
    assert echo.srr == -1 and echo.optlen == 0
    # RFC 1812: a route whose first entry is the source itself loses that entry
    pkt = IP(src=PEER, dst=ME, options=[IPOption_LSRR(routers=[PEER, R1, R2], pointer=16)])
    echo = o.echo_options(o.compile_options(options_of(pkt), received=True, our_addr=a(ME)), a(PEER))
    assert echo.faddr == a(R2)
    back = IP(build_ipv4_header(a(ME), echo.faddr, 6, 0, options=o.build_options(echo, a(PEER), a(ME), 0)))
    assert back.options[0].routers == [R1, PEER]


def test_echo_of_record_route_and_timestamp_reserves_our_slot() -> None:
    """Linux echoes RR / TS with one more slot for us (so a ping -R reply names us twice: once
    recorded on input, once on output)."""
    pkt = IP(src=PEER, dst=ME, options=[IPOption_RR(routers=["0.0.0.0"] * 3, pointer=4)])
    opt = o.compile_options(options_of(pkt), received=True, our_addr=a(ME))
    echo = o.echo_options(opt, a(PEER))
    back = IP(build_ipv4_header(a(ME), a(PEER), 1, 0, options=o.build_options(echo, a(PEER), a(ME), 0)))
    assert back.options[0].routers == [ME, ME, "0.0.0.0"] and back.options[0].pointer == 12
    # a Record Route with no slot left: copied as it is
    pkt = IP(src=PEER, dst=ME, options=[IPOption_RR(routers=[R1], pointer=8)])
    echo = o.echo_options(o.compile_options(options_of(pkt), received=True, our_addr=a(ME)), a(PEER))
    assert not echo.rr_needaddr and bytes(echo.data)[:7] == bytes(options_of(pkt))[:7]
    # filled on input, and the echo's slot would be a partial one (length 10) -> Linux gives up
    raw = bytes((7, 10, 4)) + bytes(7) + bytes(2)
    assert o.echo_options(o.compile_options(raw, received=True, our_addr=a(ME)), a(PEER)) is None


def test_application_options_and_undo() -> None:
    """IP_OPTIONS as an application gives them (``ip_options_get``): LSRR [h1, h2] to D goes to
    h1 with [h2, D]; getsockopt's form (``ip_options_undo``) is what was given, padded."""
    given = bytes(IPOption_LSRR(routers=[R1, R2], pointer=4)) + bytes(IPOption_NOP()) + \
        bytes(IPOption_RR(routers=["0.0.0.0"], pointer=4))
    opt = o.compile_options(given, received=False)
    assert opt.faddr == a(R1) and opt.optlen == 20
    hdr = build_ipv4_header(a(ME), opt.faddr, 6, 0, options=o.build_options(opt, a(PEER), a(ME), 0))
    back = IP(hdr)
    assert back.dst == R1 and back.options[0].routers == [R2, PEER] and back.options[2].routers == [ME]
    assert o.undo_options(opt) == given + b"\0" * (-len(given) % 4)
    for bad in (bytes(IPOption_LSRR(routers=[R1], pointer=8)),     # pointer must be 4
                bytes((131, 6, 4, 1, 2, 3)),                        # not whole addresses
                bytes((131, 3, 4))):                                # no address at all
        with pytest.raises(o.IpOptionError):
            o.compile_options(bad, received=False)
    with pytest.raises(o.IpOptionError):
        o.compile_options(b"\x01" * 44, received=False)


def test_header_builder_with_options_is_what_scapy_builds() -> None:
    opts = bytes(IPOption_RR(routers=[ME], pointer=8)) + bytes(IPOption_EOL())
    hdr = build_ipv4_header(a(ME), a(PEER), 6, 10, ttl=9, ident=77, tos=0x28, options=opts)
    ref = IP(src=ME, dst=PEER, proto=6, ttl=9, id=77, tos=0x28, flags="DF", len=len(hdr) + 10,
             options=[IPOption_RR(routers=[ME], pointer=8), IPOption_EOL()])
    assert hdr == bytes(ref)
    parsed, _ = parse_ipv4(hdr + bytes(10))       # (the checksum verified)
    assert parsed.ihl == 7 and parsed.options == opts
    with pytest.raises(ValueError):
        build_ipv4_header(a(ME), a(PEER), 6, 0, options=b"\x01" * 3)


@settings(max_examples=400, deadline=None, database=None)
@given(st.binary(max_size=40).map(lambda b: b + b"\0" * (-len(b) % 4)))
def test_any_option_area_is_compiled_or_rejected_cleanly(raw: bytes) -> None:
    """Arbitrary option bytes: ``IpOptionError`` (with a pointer inside the header) or options
    whose answer and header build without error -- never anything else escaping."""
    try:
        opt = o.compile_options(raw, received=True, our_addr=a(ME), timestamp=1, is_local=lambda x: x == a(ME))
    except o.IpOptionError as err:
        assert 20 <= err.pointer < 20 + max(len(raw), 1)
        return
    assert opt.optlen == len(raw)
    echo = o.echo_options(opt, a(PEER))
    if echo is not None:
        area = o.build_options(echo, a(PEER), a(ME), 2)
        assert len(area) == echo.optlen <= 40 and len(area) % 4 == 0
        parse_ipv4(build_ipv4_header(a(ME), echo.faddr or a(PEER), 6, 0, options=area))
