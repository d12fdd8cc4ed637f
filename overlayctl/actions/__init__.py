"""What each command does, over a session: init, plan, join and certs rotate are lists of phases
(overlayctl/phases/) run by the engine; status and verify are surveys of the hosts; reset,
etcd snapshots and render compose the steps they need. The CLI (overlayctl/cli/) parses the
options, calls one function here and prints what it returns.
"""
