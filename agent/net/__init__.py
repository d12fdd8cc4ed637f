"""A library for the kernel objects the data planes program: rtnetlink messages (rtnl.py), links,
addresses, routes, neighbours and fdb entries over them (netlink.py), the choice of the external
interface (iface.py) and flannel's iptables chains (iptables.py).

It imports nothing of the agent outside this folder (tests/unit/test_import_layers.py checks it),
so it can be tested, and reused, without etcd, leases or backends: callers pass plain values.
"""
