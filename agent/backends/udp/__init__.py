"""The udp backend (flannel's ``udp``): the backend itself (backend.py), and for ``Batching``
its offloads (offload.py: TUN with vnet headers, UDP GSO/GRO sockets), the framing of a
super-packet into datagrams (batch.py), the forwarding steps (forward.py) and the worker process
that takes UDP -> TUN on the second core (worker.py, run as ``-m agent.backends.udp.worker``).
"""
