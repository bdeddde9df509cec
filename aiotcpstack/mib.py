"""Counters named after the Linux MIBs (/proc/net/snmp ``Tcp:``/``Ip:``, /proc/net/netstat
``TcpExt:``) so users can read them side by side with ``nstat``.

A plain dict: the hot path does ``counters["InSegs"] += 1`` with no indirection.  Unknown names
may be added by any layer; the ones below always exist (starting at 0).
"""
from __future__ import annotations

KNOWN = (
    # Tcp: (RFC 4022 / /proc/net/snmp)
    "ActiveOpens", "PassiveOpens", "AttemptFails", "EstabResets", "CurrEstab", "InSegs", "OutSegs",
    "RetransSegs", "InErrs", "OutRsts", "InCsumErrors",
    # TcpExt: (/proc/net/netstat)
    "SyncookiesSent", "SyncookiesRecv", "SyncookiesFailed", "ListenOverflows", "ListenDrops",
    "TCPReqQFullDrop", "TCPReqQFullDoCookies", "TCPBacklogDrop", "TCPTimeouts", "TCPFastRetrans",
    "TCPSlowStartRetrans", "TCPSackRecovery", "TCPRenoRecovery", "TCPLossProbes", "DelayedACKs",
    "DelayedACKLost", "TCPChallengeACK", "TCPPAWSEstab", "PAWSEstab", "TCPPAWSActive", "TCPAbortOnData",
    "TCPAbortOnClose", "TCPAbortOnTimeout", "TCPAbortOnLinger", "TCPDSACKRecv", "TCPDSACKOldSent",
    "TCPDSACKOfoSent", "TCPSACKReorder", "TCPOFOQueue", "TCPOFODrop", "TCPOFOMerge", "TCPPureAcks",
    "TCPHPHits", "TCPHPAcks", "TCPSynRetrans", "TCPWinProbe", "TCPKeepAlive", "TimeWaited",
    "TW", "TCPSackShiftFallback", "TCPRcvCoalesce", "TCPWantZeroWindowAdv", "TCPToZeroWindowAdv",
    "TCPFromZeroWindowAdv", "TCPOrigDataSent", "TCPAckCompressed", "TCPSACKReneging",
    "EmbryonicRsts", "TCPACKSkippedSynRecv",
    "TCPFullUndo", "TCPPartialUndo", "TCPDSACKUndo", "TCPLossUndo", "TCPSpuriousRTOs",
    "TCPTSReorder",
    # Ip:/Icmp: (ours are counted too)
    "IpInReceives", "IpInHdrErrors", "IpInAddrErrors", "IpInDelivers", "IpOutRequests",
    "IpReasmReqds", "IpReasmOKs", "IpReasmFails", "IpReasmTimeout", "IpInUnknownProtos", "IcmpInMsgs", "IcmpOutMsgs", "IcmpInErrors",
    "IcmpInEchos", "IcmpOutEchoReps", "IcmpInDestUnreachs", "ArpInRequests", "ArpInReplies",
    "ArpOutRequests", "ArpOutReplies", "LinkInFrames", "LinkInDrops",
    # IPv4 options (ip/ip_options.py): source-routed datagrams a host drops (no Linux counterpart:
    # there only a drop reason), parameter problems sent (Icmp: OutParmProbs)
    "IpInSrcRouteDrops", "IcmpOutParmProbs",
)


class Counters(dict):
    """MIB counters: name -> int; missing names read as 0."""

    def __init__(self) -> None:
        super().__init__((name, 0) for name in KNOWN)

    def __missing__(self, key: str) -> int:
        return 0

    def moved(self, before: dict[str, int]) -> dict[str, int]:
        """The counters that changed since ``before`` (a copy taken earlier), as deltas."""
        return {k: v - before.get(k, 0) for k, v in self.items() if v != before.get(k, 0)}
