"""aiotcpstack: a user-space TCP/IP stack served to asyncio as Transports and Protocols.

Public API (DESIGN.md): ``Stack(interface, netns=None, address=None, **options)``; the drop-in
loop: ``loop_factory(interface, ...)`` (for ``asyncio.Runner`` / ``asyncio.run(loop_factory=)``),
``run(main, interface=..., ...)`` and ``patch_loop(loop, stack)``.
"""
from .aio.loop import loop_factory, patch_loop, run
from .aio.stack import Stack

__all__ = ["Stack", "loop_factory", "run", "patch_loop"]
__version__ = "0.1.0"
