"""Compatibility re-export: the listening endpoint is :class:`aiotcpstack.tcp.listener.Listener`
(SYN queue of request socks, accept queue, SYN cookies), created by ``NetworkCore.listen``."""
from __future__ import annotations

from ..tcp.listener import Listener, RequestSock

__all__ = ["Listener", "RequestSock"]
