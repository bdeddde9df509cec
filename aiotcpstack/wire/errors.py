"""The one error type every parser in ``wire/`` raises for malformed input.

Callers on the receive path catch exactly this, count the drop and move on; anything else
escaping a parser is a bug.
"""


class ParseError(ValueError):
    """A frame, packet, segment or option could not be parsed (truncated, bad length, ...)."""


class ChecksumError(ParseError):
    """A checksum did not verify (IPv4 header, ICMP).  A ``ParseError`` subclass so the receive
    path's single ``except ParseError`` still catches it; catch it first to count checksum errors
    separately (``InCsumErrors`` / ``IpInHdrErrors``)."""
