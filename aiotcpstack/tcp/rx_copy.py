"""The one user-space copy of received data: queued chunks into the ``bytes`` that
``data_received`` gets (``TcpConnection._deliver``).

Why not just ``b"".join``: an application that keeps what it receives (the bulk-receive
benchmark, a download held in memory) makes every delivery land in memory the process never
touched, and on this kind of host the first touch of each 4 KiB page costs far more than the
copy itself (a page fault, the kernel clearing the page; in a VM the exception entry and exit
are expensive too).  Step 19 of benchmarks/PERF_LOG.md measured a bulk receive spending half of
its CPU in those faults -- as much as the kernel-socket application spends on its own copy out
of uvloop's read buffer.  ``madvise(MADV_POPULATE_WRITE)`` (Linux 5.14) faults a whole range
in one call, without an exception per page: the same pages, zeroed the same way, 15-25 % less
CPU for the copy into fresh memory.

So for a large delivery the ``bytes`` object is created uninitialised
(``PyBytes_FromStringAndSize(NULL, n)``, the C API's documented way to build a bytes object
that is filled before anyone else sees it), its whole pages are populated with one
``madvise``, and the chunks are copied in.  Small deliveries (most of their pages are already
resident in the allocator's heap) and other interpreters or kernels use ``b"".join``; the
result is the same ``bytes`` either way (tests/unit/test_tcp_rx_copy.py).

This module does memory management only (no I/O, no clock), so the sans-IO core may use it.
"""
from __future__ import annotations

import ctypes
import mmap
import sys
from typing import Any, Callable, Optional, Sequence

#: deliveries smaller than this are joined as usual: the madvise call is not worth it, and
#: small blocks come from the allocator's heap, usually resident already
MIN_POPULATE = 64 * 1024

MADV_POPULATE_WRITE = 23        # include/uapi/asm-generic/mman-common.h (Linux 5.14)

_PAGE = mmap.PAGESIZE
#: a ctypes array type as large as any delivery: laid over a new bytes object's storage (never
#: allocated itself), so no array type is made per size (ctypes keeps every one it makes)
_SPAN = ctypes.c_char * (1 << 40)


class _Api:
    """The three C functions the populated copy needs, checked once."""

    __slots__ = ("new", "address", "madvise")

    def __init__(self, new: Any, address: Any, madvise: Any) -> None:
        self.new = new
        self.address = address
        self.madvise = madvise


def _load() -> Optional[_Api]:
    """The C functions, or None where the populated copy cannot be used: not CPython (no
    ``pythonapi``), not Linux, or a kernel without ``MADV_POPULATE_WRITE`` (EINVAL)."""
    if sys.implementation.name != "cpython" or not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
        new = ctypes.pythonapi.PyBytes_FromStringAndSize
        address = ctypes.pythonapi.PyBytes_AsString
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    new.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
    new.restype = ctypes.py_object
    address.argtypes = [ctypes.py_object]
    address.restype = ctypes.c_void_p
    probe = mmap.mmap(-1, _PAGE, flags=mmap.MAP_PRIVATE)
    try:
        base = ctypes.c_char.from_buffer(probe)
        try:
            ok = madvise(ctypes.addressof(base), _PAGE, MADV_POPULATE_WRITE) == 0
        finally:
            del base
    finally:
        probe.close()
    return _Api(new, address, madvise) if ok else None


_API = _load()


def populated_join(chunks: Sequence[Any], nbytes: int) -> bytes:
    """``b"".join(chunks)`` (``nbytes`` bytes in all), for large results into pages populated
    with one ``madvise`` (module docstring).  ``chunks``: bytes-like objects (``bytes``,
    memoryviews into the link's receive buffers); a wrong ``nbytes`` raises ``ValueError``
    (every byte is accounted for)."""
    if len(chunks) == 1 and type(chunks[0]) is bytes and len(chunks[0]) == nbytes:
        return chunks[0]                # (already what the handler gets: no copy)
    api = _API
    if api is None or nbytes < MIN_POPULATE:
        out = b"".join(chunks)
        if len(out) != nbytes:
            raise ValueError(f"chunks hold {len(out)} bytes, not {nbytes}")
        return out
    out = api.new(None, nbytes)
    addr = api.address(out)
    lo = (addr + _PAGE - 1) & -_PAGE
    hi = (addr + nbytes) & -_PAGE
    if hi > lo:
        api.madvise(lo, hi - lo, MADV_POPULATE_WRITE)    # (a failure only costs the faults)
    with memoryview(_SPAN.from_address(addr)) as span, span.cast("B") as whole, whole[:nbytes] as dst:
        pos = 0
        for c in chunks:
            end = pos + len(c)
            dst[pos:end] = c
            pos = end
        if pos != nbytes:
            raise ValueError(f"chunks hold {pos} bytes, not {nbytes}")
    return out


#: what TcpConnection._deliver uses
join: Callable[[Sequence[Any], int], bytes] = populated_join
