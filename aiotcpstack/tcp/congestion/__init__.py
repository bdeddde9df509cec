"""Pluggable congestion control (the kernel's ``tcp_congestion_ops``): see ``base``.

``cwnd`` and ``ssthresh`` are in bytes.
"""
from __future__ import annotations

from .base import INFINITE_SSTHRESH, CongestionControl, initial_window
from .cubic import Cubic
from .registry import available, create, get, register
from .reno import Reno

__all__ = [
    "CongestionControl",
    "Cubic",
    "INFINITE_SSTHRESH",
    "Reno",
    "available",
    "create",
    "get",
    "initial_window",
    "register",
]
