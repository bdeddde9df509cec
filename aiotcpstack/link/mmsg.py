"""Batched receive: ``recvmmsg(2)`` through ctypes into one preallocated buffer.

Why: with offloads off a bulk transfer is ~90,000 MTU-sized frames per 128 MiB, and one
``recv_into`` per frame costs a syscall entry/exit plus a Python method call and an ``EAGAIN``
exception at the end of every batch.  ``recvmmsg`` fills up to ``n`` slots in one call (the
kernel's ``do_recvmmsg`` loops over ``packet_recvmsg``), like a NIC handing NAPI a batch of
descriptors.  A TPACKET ring would also save the copy, but a V2 ring with 64 KB slots (veth hands
GRO super-frames up unsegmented) costs megabytes of locked memory; V3 adds its block timer's
latency (issue #6).

The ``mmsghdr`` array, the iovecs and the buffer are built once; after a call the received
lengths are read with one ``struct`` unpack per slot from a byte view of the array (ctypes
attribute access is several times slower).  Only Linux/glibc x86-64 and aarch64 layouts are
needed (LP64: ``struct msghdr`` is 56 bytes, ``struct mmsghdr`` 64); other layouts are detected
from ``ctypes.sizeof`` and the caller falls back to ``recv_into``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno as _errno
import mmap
import struct
from typing import Optional


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_IoVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


_LEN_OFF = _MMsgHdr.msg_len.offset
_STRIDE = ctypes.sizeof(_MMsgHdr)
_U32 = struct.Struct("=I").unpack_from

_recvmmsg = None


def _libc_recvmmsg():
    """The libc ``recvmmsg`` symbol (errno kept), or None where there is none."""
    global _recvmmsg
    if _recvmmsg is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fn = libc.recvmmsg
        except (OSError, AttributeError):
            _recvmmsg = False
            return None
        fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
        fn.restype = ctypes.c_int
        _recvmmsg = fn
    return _recvmmsg or None


class RecvMmsg:
    """``n`` receive slots of ``size`` bytes each over one contiguous buffer (:func:`slots`).

    :meth:`recv` returns how many slots were filled (0 when nothing was queued: ``EAGAIN``);
    :meth:`length` gives slot ``i``'s real frame length (with ``MSG_TRUNC`` the full length even
    when the slot was too small), :meth:`view` the slot as a memoryview.  Other errors raise
    ``OSError`` with the errno, like ``recv_into`` would.
    """

    __slots__ = ("n", "size", "buf", "views", "_msgs", "_iov", "_lens", "_fn", "_addr", "_cbuf", "_unpack")

    def __init__(self, n: int, size: int) -> None:
        fn = _libc_recvmmsg()
        if fn is None:
            raise OSError(_errno.ENOSYS, "recvmmsg is not available")
        self.n = n
        self.size = size
        self.buf = _anonymous(n * size)
        self._cbuf = (ctypes.c_char * len(self.buf)).from_buffer(self.buf)
        base = ctypes.addressof(self._cbuf)
        self._iov = (_IoVec * n)()
        self._msgs = (_MMsgHdr * n)()
        for i in range(n):
            self._iov[i].iov_base = base + i * size
            self._iov[i].iov_len = size
            h = self._msgs[i].msg_hdr
            h.msg_iov = ctypes.pointer(self._iov[i])
            h.msg_iovlen = 1
        self._lens = memoryview(self._msgs).cast("B")
        self._addr = ctypes.addressof(self._msgs)
        self._fn = fn
        mv = memoryview(self.buf)
        self.views = [mv[i * size:(i + 1) * size] for i in range(n)]
        # lengths(k): the msg_len of the first k mmsghdrs in one unpack (skip the msghdr, read
        # msg_len, skip the tail padding), instead of k calls of length()
        self._unpack = [struct.Struct("=" + f"{_LEN_OFF}xI{_STRIDE - _LEN_OFF - 4}x" * k).unpack_from
                        for k in range(n + 1)]

    def recv(self, fd: int, flags: int) -> int:
        """One ``recvmmsg(fd, slots, n, flags | MSG_DONTWAIT)``; 0 on ``EAGAIN``."""
        got = self._fn(fd, self._addr, self.n, flags | 0x40, None)    # 0x40: MSG_DONTWAIT
        if got < 0:
            err = ctypes.get_errno()
            if err == _errno.EAGAIN or err == _errno.EINTR:
                return 0
            raise OSError(err, _errno.errorcode.get(err, str(err)))
        return got

    def length(self, i: int) -> int:
        return _U32(self._lens, i * _STRIDE + _LEN_OFF)[0]

    def lengths(self, k: int) -> tuple[int, ...]:
        """The lengths of slots ``0 .. k-1`` (``k`` as returned by :meth:`recv`)."""
        return self._unpack[k](self._lens)


def _anonymous(nbytes: int) -> mmap.mmap:
    """Zeroed memory whose pages the kernel supplies on first touch.  The slots are sized for
    64 KB super-frames, but with MTU frames only their first page is ever written: a
    ``bytearray`` would make all ``n * size`` bytes resident (it is zero-filled by writing), an
    anonymous mapping only what is used (64 slots: ~0.3 MB instead of 4.2 MB with offloads off).
    Private, like the heap memory a ``bytearray`` would get (not shmem, which a fork would share)."""
    return mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE)


def slots(n: int, size: int) -> list[memoryview]:
    """``n`` writable buffers of ``size`` bytes (for ``recv_into``), resident only where used."""
    mv = memoryview(_anonymous(n * size))
    return [mv[i * size:(i + 1) * size] for i in range(n)]


def make(n: int, size: int) -> Optional[RecvMmsg]:
    """A :class:`RecvMmsg`, or None where ``recvmmsg`` cannot be used (callers use recv_into)."""
    try:
        return RecvMmsg(n, size)
    except OSError:
        return None
