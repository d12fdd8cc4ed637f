# verify: this host's test container in one round trip (five docker/nsenter calls each with
# its own round trip cost a second a host under load). $1 the image, $2 a tar on this host to
# `docker import` as the image when it is absent ("": none, never pulled), $3 the container's
# name. Prints "PID IP GATEWAY", then eth0's line from inside the container's network namespace
# (/sys would still be the host's). Exit 3: no image and nothing to import.
# The run comes first and the image is looked at only when it fails: each docker command is a
# Go program's start (about 35 ms of CPU), and 25 hosts start theirs at once.
image=$1 tar=$2 name=$3
run() { docker run -d --rm --pull=never --name "$name" "$image" sleep 600 2>&1; }
if ! out=$(run); then
  if docker image inspect "$image" >/dev/null 2>&1; then
    printf '%s\n' "$out" >&2
    exit 5
  fi
  if [ -z "$tar" ]; then
    echo "image '$image' is not present (no --pull here)" >&2
    exit 3
  fi
  docker import "$tar" "$image" >/dev/null || exit 4
  out=$(run) || { printf '%s\n' "$out" >&2; exit 5; }
fi
found=$(docker inspect -f '{{.State.Pid}} {{.NetworkSettings.IPAddress}} {{.NetworkSettings.Gateway}}' "$name") || exit 6
set -- $found
echo "$found"
nsenter -t "$1" -n ip -o link show eth0 || exit 7
