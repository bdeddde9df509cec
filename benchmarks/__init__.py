"""Benchmarks: the same asyncio application over kernel TCP and over aiotcpstack, side by side.

``python -m benchmarks.run --help`` (see ``benchmarks/README.md``).
"""
