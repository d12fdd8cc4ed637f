"""The agent's HTTP: the little HTTP/1.1 framing it speaks (wire.py, also used by the etcd
gateway transport), the /healthz, /readyz and /metrics server (server.py) and what /metrics
reports (metrics.py, from a status snapshot the daemon hands it; it never imports the daemon).
"""
