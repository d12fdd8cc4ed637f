"""`overlayctl doctor`: where the overlay's packets die, and how to fix it.

Three layers, pointing down: `facts` and `probes` gather what is on the hosts (one round trip
each per host, read-only), `checks/` turns facts + etcd's leases + the inventory into findings
(pure, tested without hosts), and `actions/doctor.py` runs them over a session.
"""
