# etcd snapshot restore, per member. $1 snapshot file, $2 data dir, then the `etcdctl snapshot
# restore` flags.
set -eu
file=$1; data=$2; shift 2
rm -rf "$data.restoring"
ETCDCTL_API=3 etcdctl snapshot restore "$file" --data-dir "$data.restoring" "$@" >/dev/null
rm -rf "$data"
mv "$data.restoring" "$data"
chown -R etcd:etcd "$data"
chmod 700 "$data"
