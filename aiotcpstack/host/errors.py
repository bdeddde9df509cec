"""Host-integration errors whose messages say what is needed to fix them."""
from __future__ import annotations

import errno


class HostError(OSError):
    """Base class of every error raised by ``aiotcpstack.host``."""


class PermissionsError(HostError, PermissionError):
    """The process lacks root / CAP_NET_ADMIN / CAP_NET_RAW."""

    def __init__(self, what: str, need: str = "CAP_NET_ADMIN", detail: str | None = None) -> None:
        msg = (f"{what}: permission denied; this needs root or the {need} capability "
               f"(run as root, or e.g. `setcap cap_net_admin,cap_net_raw+ep` on the interpreter)")
        if detail:
            msg += f" [{detail}]"
        super().__init__(errno.EPERM, msg)


class NoSuchNamespaceError(HostError, FileNotFoundError):
    def __init__(self, name: str) -> None:
        super().__init__(errno.ENOENT,
                         f"no such network namespace {name!r} (expected /run/netns/{name}; "
                         f"create it with pyroute2.netns.create or `ip netns add {name}`)")
        self.netns = name


class NoSuchInterfaceError(HostError, FileNotFoundError):
    def __init__(self, interface: str, netns: str | None = None) -> None:
        where = f"network namespace {netns!r}" if netns else "the current network namespace"
        super().__init__(errno.ENODEV, f"no such network interface {interface!r} in {where}")
        self.interface = interface
        self.netns = netns


class ToolMissingError(HostError, FileNotFoundError):
    """A command-line tool that host integration drives is not installed."""

    PACKAGES = {"nft": "nftables", "iptables": "iptables", "ethtool": "ethtool", "nsenter": "util-linux"}

    def __init__(self, tool: str, purpose: str = "") -> None:
        pkg = self.PACKAGES.get(tool, tool)
        why = f" (needed for {purpose})" if purpose else ""
        super().__init__(errno.ENOENT, f"'{tool}' is not installed{why}: apt-get install {pkg}")
        self.tool = tool
        self.package = pkg


class AddressNotOnInterfaceError(HostError):
    def __init__(self, address: str, interface: str, netns: str | None = None) -> None:
        where = f" in network namespace {netns!r}" if netns else ""
        super().__init__(errno.EADDRNOTAVAIL,
                         f"address {address} is not configured on interface {interface!r}{where} "
                         f"(shared mode uses the interface's kernel addresses; pass address=... for dedicated mode)")
        self.address = address
        self.interface = interface


class FirewallError(HostError):
    """nft rejected a command (message includes nft's stderr)."""
