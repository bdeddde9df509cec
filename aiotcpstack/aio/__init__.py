"""The asyncio layer: ``Stack``, its Transports and Servers (the only layer that knows the loop)."""
from .server import Server
from .stack import Stack
from .transport import TcpTransport

__all__ = ["Stack", "Server", "TcpTransport"]
