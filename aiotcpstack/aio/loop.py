"""The drop-in event loop: existing asyncio code runs unchanged over the user-space stack.

One mixin, :class:`StackLoopMixin`, is put in front of a base loop class
(``asyncio.SelectorEventLoop`` or ``uvloop.Loop``; both are Python-subclassable).  Its
``create_connection`` / ``create_server`` (and so ``asyncio.open_connection``,
``asyncio.start_server``, aiohttp, websockets, ...) go through the loop's own :class:`Stack`;
everything else is the base loop's, unchanged: ``sock=`` calls, unix sockets
(``create_unix_connection`` / ``create_unix_server``), UDP (``create_datagram_endpoint``),
``getaddrinfo``, subprocesses, signals, executors.

Lifecycle: the stack is created with the loop and *started lazily*, on that loop, by the first
TCP ``create_connection`` / ``create_server`` (``Stack.start()`` is a coroutine, and most loops
that test suites and frameworks make never open a TCP connection: starting eagerly would cost a
firewall table and a packet socket per loop for nothing).  ``loop.close()`` closes the stack
synchronously (connections are reset, the link closed, the nft table and the kernel port
reservations removed) -- also when the loop is closed without ``shutdown_asyncgens`` or
``asyncio.Runner``.

Public entry points (DESIGN.md, Public API): :func:`loop_factory`, :func:`run`, :func:`patch_loop`.
"""
from __future__ import annotations

import asyncio
import inspect
import sys
from typing import Any, Awaitable, Callable, TypeVar

from .stack import Stack
from .transport import TcpTransport

__all__ = ["StackLoopMixin", "StackSelectorEventLoop", "loop_factory", "run", "patch_loop",
           "new_stack_loop", "stack_loop_class"]

T = TypeVar("T")

# The running interpreter's own signatures are the spec: an argument that this Python's asyncio
# does not know is a TypeError here too (all_errors= is 3.12+, keep_alive= is 3.13+).
_CONNECT_KW = frozenset(p for p in inspect.signature(asyncio.BaseEventLoop.create_connection).parameters
                        if p not in ("self", "protocol_factory", "host", "port"))
_SERVER_KW = frozenset(p for p in inspect.signature(asyncio.BaseEventLoop.create_server).parameters
                       if p not in ("self", "protocol_factory", "host", "port"))
_CONNECT_DEFAULTS = {k: v.default for k, v in
                     inspect.signature(asyncio.BaseEventLoop.create_connection).parameters.items()
                     if k in _CONNECT_KW}
_SERVER_DEFAULTS = {k: v.default for k, v in
                    inspect.signature(asyncio.BaseEventLoop.create_server).parameters.items()
                    if k in _SERVER_KW}


def _check_kwargs(name: str, allowed: frozenset, kwargs: dict) -> None:
    for k in kwargs:
        if k not in allowed:
            raise TypeError(f"{name}() got an unexpected keyword argument {k!r}")


class StackLoopMixin:
    """Routes TCP ``create_connection`` / ``create_server`` of a loop through its :class:`Stack`.

    Put it first in the bases: ``class L(StackLoopMixin, asyncio.SelectorEventLoop)``; call
    :meth:`_ats_bind` once with the stack (``__init__`` of the concrete classes does)."""

    _ats_stack: Stack | None = None
    _ats_starting: Any = None
    _ats_owns_stack = True

    # ---------------------------------------------------------------- stack lifecycle
    def _ats_bind(self, stack: Stack, owns: bool = True) -> None:
        self._ats_stack = stack
        self._ats_starting = None
        self._ats_owns_stack = owns

    @property
    def stack(self) -> Stack:
        """The loop's :class:`Stack` (started on the first TCP call)."""
        return self._ats_stack  # type: ignore[return-value]

    async def _ats_started_stack(self) -> Stack:
        stack = self._ats_stack
        if stack is None:
            raise RuntimeError("this loop has no aiotcpstack Stack")
        if stack._started and not stack._closed:
            if stack._loop is not self:
                raise RuntimeError(f"{stack!r} runs on another event loop")
            return stack
        if stack._closed:
            raise RuntimeError("the loop's aiotcpstack Stack is closed")
        fut = self._ats_starting
        if fut is None:
            fut = self._ats_starting = self.create_future()
            try:
                await stack.start()
            except BaseException as exc:
                self._ats_starting = None
                if not fut.done():
                    fut.set_exception(exc)
                    fut.exception()          # retrieved: waiters re-raise it, no "never retrieved"
                raise
            fut.set_result(None)
        else:
            await asyncio.shield(fut)
        return stack

    def _ats_close_stack(self) -> None:
        """Close the stack synchronously (``loop.close()`` cannot await)."""
        stack = self._ats_stack
        if stack is None or not self._ats_owns_stack:
            return
        if not stack._started or stack._closed:
            stack._closed = True
            return
        stack._closed = True
        try:
            for server in list(stack._servers):
                try:
                    server.close()
                except Exception:  # noqa: BLE001
                    pass
            for t in list(stack._transports):
                try:
                    t.abort()       # RST to the peer now, not a half-open connection left behind
                except Exception:  # noqa: BLE001
                    pass
            stack._transports.clear()
        finally:
            stack._teardown()

    def close(self) -> None:
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if not self.is_closed():
            stack = self._ats_stack
            if stack is not None and self._ats_owns_stack and stack._started and not stack._closed \
                    and stack._orphans():
                # connections the application closed still have unacknowledged data: give them
                # the time the kernel would (bounded), while the loop can still run
                try:
                    self.run_until_complete(stack.linger_orphans())
                except Exception:  # noqa: BLE001 - closing must go on
                    pass
            try:
                self._ats_close_stack()
            finally:
                super().close()  # type: ignore[misc]
        else:
            super().close()  # type: ignore[misc]

    # ---------------------------------------------------------------- TCP through the stack
    async def create_connection(self, protocol_factory: Callable[[], asyncio.BaseProtocol],
                                host: Any = None, port: Any = None, **kwargs: Any) -> tuple[Any, Any]:
        _check_kwargs("create_connection", _CONNECT_KW, kwargs)
        if kwargs.get("sock") is not None:
            if host is not None or port is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            return await self._ats_base_create_connection(protocol_factory, **kwargs)
        stack = await self._ats_started_stack()
        return await stack.create_connection(protocol_factory, host, port, **kwargs)

    async def _ats_base_create_connection(self, protocol_factory: Any, **kwargs: Any) -> Any:
        base = super()
        if not _has_param(base.create_connection, "happy_eyeballs_delay"):   # uvloop
            kwargs.pop("happy_eyeballs_delay", None)
            kwargs.pop("interleave", None)
        if not _has_param(base.create_connection, "all_errors"):
            kwargs.pop("all_errors", None)
        return await base.create_connection(protocol_factory, **kwargs)  # type: ignore[misc]

    async def create_server(self, protocol_factory: Callable[[], asyncio.BaseProtocol],
                            host: Any = None, port: Any = None, **kwargs: Any) -> Any:
        _check_kwargs("create_server", _SERVER_KW, kwargs)
        if kwargs.get("sock") is not None:
            if host is not None or port is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            base = super()
            if not _has_param(base.create_server, "keep_alive"):
                kwargs.pop("keep_alive", None)
            return await base.create_server(protocol_factory, **kwargs)  # type: ignore[misc]
        stack = await self._ats_started_stack()
        return await stack.create_server(protocol_factory, host, port, **kwargs)

    # ---------------------------------------------------------------- TLS / sendfile on our transports
    async def start_tls(self, transport: Any, protocol: Any, sslcontext: Any, *, server_side: bool = False,
                        server_hostname: str | None = None, ssl_handshake_timeout: float | None = None,
                        ssl_shutdown_timeout: float | None = None) -> Any:
        if not isinstance(transport, TcpTransport):
            return await super().start_tls(  # type: ignore[misc]
                transport, protocol, sslcontext, server_side=server_side, server_hostname=server_hostname,
                ssl_handshake_timeout=ssl_handshake_timeout, ssl_shutdown_timeout=ssl_shutdown_timeout)
        # asyncio.BaseEventLoop.start_tls, for every base loop (uvloop's rejects foreign transports)
        return await _sslproto_start_tls(self, transport, protocol, sslcontext, server_side, server_hostname,
                                         ssl_handshake_timeout, ssl_shutdown_timeout)

    async def sendfile(self, transport: Any, file: Any, offset: int = 0, count: int | None = None, *,
                       fallback: bool = True) -> int:
        if isinstance(transport, TcpTransport) or not isinstance(self, asyncio.BaseEventLoop):
            # asyncio's checks and its read-and-write fallback (uvloop has no loop.sendfile)
            return await asyncio.BaseEventLoop.sendfile(self, transport, file, offset, count,  # type: ignore[arg-type]
                                                         fallback=fallback)
        return await super().sendfile(transport, file, offset, count, fallback=fallback)  # type: ignore[misc]


def _has_param(fn: Any, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


async def _sslproto_start_tls(loop: Any, transport: Any, protocol: Any, sslcontext: Any, server_side: bool,
                              server_hostname: str | None, ssl_handshake_timeout: float | None,
                              ssl_shutdown_timeout: float | None) -> Any:
    import ssl as _ssl
    from asyncio import sslproto
    if _ssl is None or not isinstance(sslcontext, _ssl.SSLContext):
        raise TypeError(f"sslcontext is expected to be an instance of ssl.SSLContext, got {sslcontext!r}")
    if not getattr(transport, "_start_tls_compatible", False):
        raise TypeError(f"transport {transport!r} is not supported by start_tls()")
    waiter = loop.create_future()
    ssl_protocol = sslproto.SSLProtocol(
        loop, protocol, sslcontext, waiter, server_side, server_hostname,
        ssl_handshake_timeout=ssl_handshake_timeout, ssl_shutdown_timeout=ssl_shutdown_timeout,
        call_connection_made=False)
    # Pause early so that "ssl_protocol.data_received()" doesn't have a chance to get called
    # before "ssl_protocol.connection_made()".
    transport.pause_reading()
    transport.set_protocol(ssl_protocol)
    conmade_cb = loop.call_soon(ssl_protocol.connection_made, transport)
    resume_cb = loop.call_soon(transport.resume_reading)
    try:
        await waiter
    except BaseException:
        transport.close()
        conmade_cb.cancel()
        resume_cb.cancel()
        raise
    return ssl_protocol._app_transport


class StackSelectorEventLoop(StackLoopMixin, asyncio.SelectorEventLoop):
    """``asyncio.SelectorEventLoop`` whose TCP goes through ``stack``."""

    def __init__(self, stack: Stack, selector: Any = None) -> None:
        super().__init__(selector)
        self._ats_bind(stack)


_uvloop_class: Any = None


def _stack_uvloop_class() -> type:
    global _uvloop_class
    if _uvloop_class is None:
        try:
            import uvloop
        except ImportError as exc:  # pragma: no cover - uvloop is a dependency
            raise RuntimeError("uvloop=True needs the 'uvloop' package (pip install uvloop)") from exc

        class StackUVLoop(StackLoopMixin, uvloop.Loop):
            """``uvloop.Loop`` whose TCP goes through ``stack``."""

            def __init__(self, stack: Stack) -> None:
                super().__init__()
                self._ats_bind(stack)

        _uvloop_class = StackUVLoop
    return _uvloop_class


def stack_loop_class(uvloop: bool = False) -> type:
    """The drop-in loop class over ``asyncio.SelectorEventLoop`` or ``uvloop.Loop``."""
    return _stack_uvloop_class() if uvloop else StackSelectorEventLoop


def new_stack_loop(stack: Stack, uvloop: bool = False) -> asyncio.AbstractEventLoop:
    """A new drop-in loop that owns ``stack`` (closed with the loop)."""
    return stack_loop_class(uvloop)(stack)


def loop_factory(interface: str, netns: str | None = None, address: Any = None, uvloop: bool = False,
                 **options: Any) -> Callable[[], asyncio.AbstractEventLoop]:
    """A zero-argument callable that makes a new event loop with its own :class:`Stack`.

    For ``asyncio.Runner(loop_factory=...)`` (3.11+) and ``asyncio.run(..., loop_factory=...)``
    (3.12+).  The arguments are :class:`Stack`'s; they are checked now (a bad option is an error
    here, not on the first connection)."""
    Stack(interface, netns=netns, address=address, **options)     # validate eagerly
    cls = stack_loop_class(uvloop)

    def factory() -> asyncio.AbstractEventLoop:
        return cls(Stack(interface, netns=netns, address=address, **options))

    factory.__qualname__ = factory.__name__ = f"aiotcpstack_loop_factory[{interface}{'/uvloop' if uvloop else ''}]"
    return factory


def run(main: Awaitable[T], *, interface: str, netns: str | None = None, address: Any = None,
        uvloop: bool = False, debug: bool | None = None, **options: Any) -> T:
    """Like ``asyncio.run(main)``, on a drop-in loop with its own stack (3.11-3.13)."""
    if not asyncio.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    try:
        factory = loop_factory(interface, netns=netns, address=address, uvloop=uvloop, **options)
    except BaseException:
        main.close()
        raise
    with asyncio.Runner(debug=debug, loop_factory=factory) as runner:
        return runner.run(main)


def patch_loop(loop: asyncio.AbstractEventLoop, stack: Stack) -> asyncio.AbstractEventLoop:
    """Make an existing loop (one a framework created) route TCP through ``stack``.

    The loop's class is swapped for a subclass with the drop-in mixin in front (its state is
    untouched); ``loop.close()`` then closes the stack as well.  Returns the loop."""
    if isinstance(loop, StackLoopMixin):
        raise RuntimeError(f"{loop!r} already routes TCP through {loop._ats_stack!r}")
    if loop.is_closed():
        raise RuntimeError("Event loop is closed")
    if stack._started and stack._loop is not loop:
        raise RuntimeError(f"{stack!r} already runs on another event loop")
    base = type(loop)
    cls = _patched_classes.get(base)
    if cls is None:
        cls = type(f"Stack{base.__name__}", (StackLoopMixin, base), {"__module__": __name__})
        _patched_classes[base] = cls
    try:
        loop.__class__ = cls
    except TypeError as exc:
        raise TypeError(f"cannot patch a {base.__qualname__} (not a Python-subclassable loop): {exc}") from None
    loop._ats_bind(stack)  # type: ignore[attr-defined]
    return loop


_patched_classes: dict[type, type] = {}


if sys.version_info < (3, 11):  # pragma: no cover
    raise ImportError("aiotcpstack needs Python 3.11+")
