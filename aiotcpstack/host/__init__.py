"""Host side: namespaces and labs (lab.py, netns.py, impair.py), interface/route/neighbour discovery
(iface.py), shared-mode RST suppression (firewall.py) and kernel port reservation (ports.py).

Submodules are imported on demand (``from aiotcpstack.host import firewall``); nothing here touches the
host at import time.
"""
