"""etcd as overlayctl reaches it: through `etcdctl` on a member, over SSH.

etcdctl.py builds the command lines and parses their output (pure); cluster.py reads the
cluster's health and state (members, the network config, leases) and waits for health;
members.py adds and removes members; netconfig.py reads and writes the network config; snapshot.py
saves and restores a member's data.
"""
