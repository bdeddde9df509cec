"""Test tiers: unit and sim run anywhere; ``live`` needs root (CAP_NET_ADMIN/CAP_NET_RAW), network
namespaces and nft.  Missing prerequisites make live tests *skip with the reason*, never pass."""
from __future__ import annotations

import os
import shutil

import pytest


def live_skip_reason() -> str | None:
    """Why the live tier cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "live tier needs root (CAP_NET_ADMIN and CAP_NET_RAW for namespaces, veth and AF_PACKET)"
    for tool in ("nft",):
        if shutil.which(tool) is None:
            return f"live tier needs '{tool}' (apt-get install nftables)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = live_skip_reason()
    for item in items:
        if "/live/" in str(item.fspath) or item.get_closest_marker("live"):
            item.add_marker(pytest.mark.live)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


# ---------------------------------------------------------------- pytest-asyncio loop factories
# (asyncio issue) ``@pytest.mark.asyncio(loop_factories=["stack-asyncio", "stack-uvloop"])`` runs an
# async test on the drop-in loop (asyncio and uvloop flavours), each loop with its own shared-mode
# Stack on ``lo`` of a private network namespace made once per session (``stack_loop_netns``
# fixture: its name, to open kernel peers there).  Where the live tier cannot run (no root / nft)
# those factories are not offered, so pytest-asyncio reports such tests as skipped with the reason;
# "asyncio" (the stock loop) is always offered.  Unmarked async tests get the stock loop only
# (one factory: the test id does not change).
import asyncio as _asyncio  # noqa: E402

_STACK_NETNS: dict[str, str] = {}


def _stack_loop_netns() -> str:
    """A private namespace with lo up and 127/8 injection allowed (made on first use)."""
    name = _STACK_NETNS.get("name")
    if name is None:
        import atexit
        import uuid

        from pyroute2 import netns as _pnetns

        from aiotcpstack.host.netns import in_netns, write_sysctl
        name = f"ats-loopf-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        _pnetns.create(name)
        atexit.register(_remove_stack_netns)
        _STACK_NETNS["name"] = name
        with in_netns(name):
            from pyroute2 import IPRoute
            with IPRoute() as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        for key in ("route_localnet", "accept_local"):
            for dev in ("all", "lo"):
                write_sysctl(name, f"net.ipv4.conf.{dev}.{key}", 1)
    return name


def _remove_stack_netns() -> None:
    name = _STACK_NETNS.pop("name", None)
    if name is not None:
        from pyroute2 import netns as _pnetns
        try:
            _pnetns.remove(name)
        except Exception:  # noqa: BLE001
            pass


def _stack_factory(uvloop: bool):
    def factory():
        import aiotcpstack
        return aiotcpstack.loop_factory("lo", netns=_stack_loop_netns(), uvloop=uvloop)()
    factory.__name__ = "stack-uvloop" if uvloop else "stack-asyncio"
    return factory


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item):
    factories = {"asyncio": _asyncio.new_event_loop}
    marker = item.get_closest_marker("asyncio")
    if marker is None or "loop_factories" not in marker.kwargs:
        return factories
    if live_skip_reason() is None:
        factories["stack-asyncio"] = _stack_factory(False)
        factories["stack-uvloop"] = _stack_factory(True)
    return factories


@pytest.fixture
def stack_loop_netns() -> str:
    """The namespace the "stack-*" loop factories put their stacks in (on its ``lo``)."""
    reason = live_skip_reason()
    if reason:
        pytest.skip(reason)
    return _stack_loop_netns()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _remove_stack_netns()
