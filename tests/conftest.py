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
