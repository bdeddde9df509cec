"""Congestion-control algorithms by name (the kernel's ``tcp_cong_list`` / ``tcp_ca_find``)."""
from __future__ import annotations

from .base import CongestionControl
from .cubic import Cubic
from .reno import Reno

__all__ = ["get", "register", "available", "create"]

_ALGORITHMS: dict[str, type[CongestionControl]] = {"reno": Reno, "cubic": Cubic}


def get(name: str) -> type[CongestionControl]:
    """The class registered as ``name`` (``"reno"``, ``"cubic"``); ``KeyError`` names the choices."""
    try:
        return _ALGORITHMS[name.lower()]
    except KeyError:
        raise KeyError(f"unknown congestion control {name!r}; available: {', '.join(sorted(_ALGORITHMS))}") from None


def create(name: str, mss: int = 1460, initial_cwnd: int = 10, now: float = 0.0) -> CongestionControl:
    """Instantiate ``name`` (convenience for ``get(name)(mss, initial_cwnd, now)``)."""
    return get(name)(mss, initial_cwnd, now)


def register(cls: type[CongestionControl], name: str | None = None) -> None:
    """Add an algorithm (``tcp_register_congestion_control``)."""
    _ALGORITHMS[(name or cls.name).lower()] = cls


def available() -> list[str]:
    """Names of the registered algorithms (``tcp_available_congestion_control``)."""
    return sorted(_ALGORITHMS)
