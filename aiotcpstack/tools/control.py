"""Control socket: lets ``aiotcpstack ss`` / ``nstat`` look into a running stack in another process.

``ControlServer(stack, path=None)``: a unix stream socket, owner-only (socket 0600 in a 0700 directory),
by default ``/run/aiotcpstack/<pid>.sock`` (``<pid>-<n>.sock`` for a second stack in the same process),
served on the stack's own event loop (``loop.create_unix_server(sock=...)``: the drop-in loop hands unix
sockets to its base loop unchanged), so every answer is a consistent snapshot taken between two
callbacks -- no locks, no threads.  The socket file is removed on :meth:`ControlServer.close`; files
left by a killed process are swept (the pid in the name is dead) by the next server and ignored by
clients.

Protocol: newline-delimited JSON, any number of requests per connection::

    -> {"cmd": "connections"}   <- {"ok": true, "result": [ {stack.connections() item}, ... ]}
    -> {"cmd": "counters"}      <- {"ok": true, "result": {"InSegs": 12, ...}}
    -> {"cmd": "info"}          <- {"ok": true, "result": {"pid": ..., "interface": ..., "netns": ..., ...}}
    -> {"cmd": "ping"}          <- {"ok": true, "result": "pong"}
    -> anything else            <- {"ok": false, "error": "..."}

Tuples become lists, bytes become hex strings.  Request lines are limited to 64 KiB.

Directory: ``$AIOTCPSTACK_RUN_DIR`` if set, else ``/run/aiotcpstack`` (``$XDG_RUNTIME_DIR/aiotcpstack`` or
``/tmp/aiotcpstack-<uid>`` when ``/run`` is not writable).
"""
from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import re
import socket
import stat
import tempfile
import time
from typing import Any, Iterable

__all__ = ["ControlServer", "ControlError", "run_dir", "default_socket_path", "list_sockets", "query",
           "query_many", "start_control"]

log = logging.getLogger("aiotcpstack.tools.control")

MAX_REQUEST = 64 * 1024
_SOCK_RE = re.compile(r"^(\d+)(?:-(\d+))?\.sock$")


class ControlError(RuntimeError):
    """A control socket could not be reached or answered with an error."""


# ------------------------------------------------------------------------------------------ paths
def _candidate_dirs() -> list[str]:
    env = os.environ.get("AIOTCPSTACK_RUN_DIR")
    if env:
        return [env]
    dirs = ["/run/aiotcpstack"]
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        dirs.append(os.path.join(xdg, "aiotcpstack"))
    dirs.append(os.path.join(tempfile.gettempdir(), f"aiotcpstack-{os.getuid()}"))
    return dirs


def _ensure_private_dir(path: str) -> None:
    """Create ``path`` with mode 0700 (parents too); tighten it to 0700 if we own it."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(path)
    if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)


def run_dir(create: bool = False) -> str:
    """The directory for control sockets (and ``labs/`` state).  ``create``: make it (0700)."""
    cands = _candidate_dirs()
    if not create:
        for d in cands:
            if os.path.isdir(d):
                return d
        return cands[0]
    last: Exception | None = None
    for d in cands:
        try:
            _ensure_private_dir(d)
            return d
        except OSError as exc:  # e.g. /run not writable for a non-root user
            last = exc
    raise ControlError(f"cannot create a control-socket directory (tried {', '.join(cands)}): {last}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _socket_live(path: str, timeout: float = 0.5) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def default_socket_path(pid: int | None = None) -> str:
    """``<run_dir>/<pid>.sock``, or ``<pid>-<n>.sock`` when that one is taken by a live server."""
    pid = os.getpid() if pid is None else pid
    d = run_dir(create=True)
    n = 0
    while True:
        name = f"{pid}.sock" if n == 0 else f"{pid}-{n}.sock"
        path = os.path.join(d, name)
        if not os.path.exists(path) or not _socket_live(path):
            return path
        n += 1


def sweep_stale(directory: str | None = None) -> list[str]:
    """Remove socket files whose pid is dead; returns the removed paths."""
    d = directory or run_dir()
    removed = []
    try:
        names = os.listdir(d)
    except OSError:
        return removed
    for name in names:
        m = _SOCK_RE.match(name)
        if m and not _pid_alive(int(m.group(1))):
            try:
                os.unlink(os.path.join(d, name))
                removed.append(os.path.join(d, name))
            except OSError:
                pass
    return removed


def list_sockets(pid: int | None = None, directory: str | None = None) -> list[tuple[int, str]]:
    """``[(pid, path), ...]`` of control sockets whose process is alive (optionally of one ``pid``)."""
    out = []
    for d in ([directory] if directory else _candidate_dirs()):
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for name in names:
            m = _SOCK_RE.match(name)
            if not m:
                continue
            p = int(m.group(1))
            if pid is not None and p != pid:
                continue
            if not _pid_alive(p):
                continue
            out.append((p, os.path.join(d, name)))
        if directory is None and out:
            break
    out.sort(key=lambda item: (item[0], item[1]))
    return out


# ------------------------------------------------------------------------------------------ server
def _json_default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).hex()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    return str(obj)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, default=_json_default, separators=(",", ":")).encode() + b"\n"


class _ControlProtocol(asyncio.Protocol):
    def __init__(self, server: "ControlServer") -> None:
        self.server = server
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server._clients.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._clients.discard(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            i = self.buf.find(b"\n")
            if i < 0:
                break
            line = bytes(self.buf[:i])
            del self.buf[:i + 1]
            if line.strip():
                self.transport.write(self.server.handle(line))  # type: ignore[union-attr]
        if len(self.buf) > MAX_REQUEST:
            self.transport.write(_dumps({"ok": False, "error": "request too long"}))  # type: ignore[union-attr]
            self.transport.close()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        if self.buf.strip():
            self.transport.write(self.server.handle(bytes(self.buf)))  # type: ignore[union-attr]
        self.buf.clear()
        return False          # close our side too


class ControlServer:
    """Serve ``stack``'s connections and counters on a unix socket (see the module docstring).

    ``await server.start()`` (on the stack's loop), ``server.close()`` (sync, idempotent: closes the
    listening socket and the open client connections, unlinks the file), ``await server.wait_closed()``.
    Also an async context manager.  ``stack`` needs ``connections()`` and ``counters``; ``interface``,
    ``netns``, ``dedicated`` and ``addresses`` are reported by ``info`` when present.
    """

    def __init__(self, stack: Any, path: str | os.PathLike | None = None) -> None:
        self.stack = stack
        self._requested_path = os.fspath(path) if path is not None else None
        self.path: str | None = None
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[_ControlProtocol] = set()
        self._inode: tuple[int, int] | None = None
        self.started = time.time()

    # -------------------------------------------------------------- lifecycle
    async def start(self) -> "ControlServer":
        if self._server is not None:
            return self
        loop = asyncio.get_running_loop()
        sock = self._bind()
        try:
            self._server = await loop.create_unix_server(lambda: _ControlProtocol(self), sock=sock)
        except BaseException:
            sock.close()
            self._unlink()
            raise
        log.info("control socket %s", self.path)
        return self

    def _bind(self) -> socket.socket:
        if self._requested_path is None:
            sweep_stale(run_dir(create=True))
            path = default_socket_path()
        else:
            path = self._requested_path
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                _ensure_private_dir(parent)
            if os.path.exists(path):
                if not stat.S_ISSOCK(os.stat(path).st_mode):
                    raise FileExistsError(errno.EEXIST, f"control socket path exists and is not a socket: {path}")
                if _socket_live(path):
                    raise OSError(errno.EADDRINUSE, f"control socket {path} is in use by a running server")
                os.unlink(path)          # stale
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)      # the file is created 0600: no window where others can connect
        try:
            sock.bind(path)
        except BaseException:
            sock.close()
            raise
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        sock.listen(16)
        sock.setblocking(False)
        st = os.stat(path)
        self._inode = (st.st_dev, st.st_ino)
        self.path = path
        return sock

    def _unlink(self) -> None:
        path = self.path
        if path is None or self._inode is None:
            return
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) == self._inode:      # still ours (not re-created by someone else)
                os.unlink(path)
        except OSError:
            pass
        self._inode = None

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for client in list(self._clients):
            if client.transport is not None:
                client.transport.close()
        self._clients.clear()
        self._unlink()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> "ControlServer":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        self.close()
        await self.wait_closed()

    # -------------------------------------------------------------- requests
    def handle(self, line: bytes) -> bytes:
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise ValueError("request must be a JSON object")
            cmd = req.get("cmd")
            if cmd == "connections":
                result: Any = list(self.stack.connections())
            elif cmd == "counters":
                result = dict(self.stack.counters)
            elif cmd == "info":
                result = self.info()
            elif cmd == "ping":
                result = "pong"
            else:
                return _dumps({"ok": False, "error": f"unknown cmd {cmd!r} (connections, counters, info, ping)"})
            return _dumps({"ok": True, "result": result})
        except Exception as exc:  # noqa: BLE001 - the answer carries the error; the stack keeps running
            log.debug("control request %r failed", line[:200], exc_info=True)
            return _dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"})

    def info(self) -> dict[str, Any]:
        st = self.stack
        out: dict[str, Any] = {"pid": os.getpid(), "socket": self.path, "started": self.started}
        for key in ("interface", "netns", "dedicated"):
            if hasattr(st, key):
                out[key] = getattr(st, key)
        try:
            out["addresses"] = list(getattr(st, "addresses", []) or [])
        except Exception:  # noqa: BLE001
            pass
        return out


async def start_control(stack: Any, path: str | os.PathLike | None = None) -> ControlServer:
    """``ControlServer(stack, path)`` started: for code that runs a Stack without ``control=True``."""
    return await ControlServer(stack, path).start()


# ------------------------------------------------------------------------------------------ client
def _recv_line(sock: socket.socket) -> bytes:
    chunks = bytearray()
    while True:
        data = sock.recv(65536)
        if not data:
            break
        chunks += data
        if chunks.endswith(b"\n"):
            break
    return bytes(chunks)


def query_many(path: str, cmds: Iterable[str], timeout: float = 5.0) -> dict[str, Any]:
    """Send several requests on one connection; ``{cmd: result}``.  Raises :class:`ControlError`."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    out: dict[str, Any] = {}
    try:
        try:
            s.connect(path)
        except FileNotFoundError:
            raise ControlError(f"no control socket at {path}") from None
        except PermissionError:
            raise ControlError(f"permission denied on {path} (control sockets are owner-only: run as the "
                               f"stack's user, e.g. with sudo)") from None
        except OSError as exc:
            raise ControlError(f"cannot connect to {path}: {exc.strerror or exc} "
                               f"(stack not running any more?)") from None
        for cmd in cmds:
            s.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
            raw = _recv_line(s)
            if not raw:
                raise ControlError(f"{path}: connection closed without an answer to {cmd!r}")
            reply = json.loads(raw)
            if not reply.get("ok"):
                raise ControlError(f"{path}: {cmd}: {reply.get('error')}")
            out[cmd] = reply.get("result")
    except socket.timeout:
        raise ControlError(f"{path}: no answer within {timeout} s (is the stack's event loop blocked?)") from None
    finally:
        s.close()
    return out


def query(path: str, cmd: str, timeout: float = 5.0) -> Any:
    """One request: the ``result`` of ``{"cmd": cmd}``.  Raises :class:`ControlError`."""
    return query_many(path, [cmd], timeout)[cmd]


def resolve_targets(pid: int | None = None, socket_path: str | None = None) -> list[tuple[int | None, str]]:
    """The control sockets a client command should ask: ``--socket`` > ``--pid`` > all live ones."""
    if socket_path:
        m = _SOCK_RE.match(os.path.basename(socket_path))
        return [(int(m.group(1)) if m else None, socket_path)]
    found = list_sockets(pid)
    return [(p, path) for p, path in found]
