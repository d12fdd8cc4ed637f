# Run the etcdctl command in $@ only where etcd runs here (exit 3 otherwise): on a fresh host
# there is no etcd for etcdctl to wait its timeout for.
systemctl is-active --quiet etcd || exit 3
exec "$@"
