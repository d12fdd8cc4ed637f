"""Subnets as flannel keeps them in etcd: the network config (config.py: parse, defaults), the key
layout and lease records (layout.py), the pure choice of a free subnet and conflict checks
(choice.py), then the etcd side: our own lease (lease.py) and the watch of everyone's
(watch.py). Pure modules do no I/O; only lease.py, watch.py and config's wait talk to etcd.
"""
