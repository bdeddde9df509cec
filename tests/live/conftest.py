"""Shared live-tier fixtures: network-namespace labs (see aiotcpstack/host/lab.py).

- ``lab``: a fresh two-namespace :class:`~aiotcpstack.host.lab.Lab` per test (offloads on, IPv6 on).
- ``lab_factory(**kw)``: make more / differently configured labs (``offloads=False``, ``loss=...``,
  ``mtu=...``); ``lab_factory(impaired=True, **kw)`` makes an :class:`ImpairedLab`.  All are removed at
  teardown, also when the test failed.
- ``lab_nooffload``: shortcut for ``Lab(offloads=False)``.

The root conftest marks everything under tests/live as ``live`` and skips it (with the reason) without
root / nft.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from aiotcpstack.host.lab import ImpairedLab, Lab


@pytest.fixture
def lab_factory() -> Iterator[Callable[..., Any]]:
    made: list[Any] = []

    def make(impaired: bool = False, **kw: Any):
        obj = (ImpairedLab if impaired else Lab)(**kw)
        obj.__enter__()
        made.append(obj)
        return obj

    try:
        yield make
    finally:
        errors = []
        for obj in reversed(made):
            try:
                obj.close()
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def lab(lab_factory: Callable[..., Lab]) -> Lab:
    return lab_factory()


@pytest.fixture
def lab_nooffload(lab_factory: Callable[..., Lab]) -> Lab:
    return lab_factory(offloads=False)
