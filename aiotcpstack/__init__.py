"""aiotcpstack: a user-space TCP/IP stack served to asyncio as Transports and Protocols.

Public API (DESIGN.md): ``Stack(interface, netns=None, address=None, **options)``; the drop-in
``loop_factory`` / ``run`` come with the asyncio issue.
"""
from .aio.stack import Stack

__all__ = ["Stack"]
__version__ = "0.1.0"
