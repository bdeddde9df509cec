"""Observability and lab tools behind the ``aiotcpstack`` command (``aiotcpstack.cli``).

- :mod:`.control`: ``ControlServer(stack)`` -- a unix socket (``/run/aiotcpstack/<pid>.sock``, mode 0600)
  served on the stack's event loop that answers JSON requests (``connections``, ``counters``, ``info``);
  ``query(path, cmd)`` is the client.  ``Stack(..., control=True)`` starts one.
- :mod:`.ss` / :mod:`.nstat`: ``aiotcpstack ss`` (like ``ss -tin``) and ``aiotcpstack nstat`` (like
  ``nstat -az``) for running stacks, through their control sockets.
- :mod:`.pcapread`: a classic-pcap reader on the project's own ``wire/`` parsers.
- :mod:`.plots`: Stevens/tcptrace time-sequence graph and cwnd/RTT graph from a pcap (matplotlib, lazy).
- :mod:`.trace`: ``aiotcpstack trace``: a transfer against kernel TCP in a fresh lab, captured and plotted.
- :mod:`.lab_cmd`: ``aiotcpstack lab up|down|status``: persistent labs for experiments.
- :mod:`.progress`: a small stderr progress bar for long runs.

Logging: the stack logs through the standard :mod:`logging` module, on ``logging.getLogger("aiotcpstack")``
and its children (``aiotcpstack.aio``, ``aiotcpstack.tools.control``, ...).  Nothing is printed unless the
application configures logging; ``aiotcpstack -v`` (INFO) / ``-vv`` (DEBUG) does that for the command.
"""
