"""Run one data-plane backend inside a light lab host, driven through files; and its controller.

A process cannot move its threads into another network namespace, so each host runs this file
(``main``): it builds the backend from a JSON spec (argv[1]), writes ``ready.json`` (BackendData,
MTU), then polls ``peers.json``: ``{"generation": n, "peers": [lease...], "resync": bool}``.
Each generation is written into an in-memory etcd (:class:`_Store`: keys, revisions, watch
events) that the agent's own SubnetWatcher lists and watches, feeding the backend through the
agent's SerialSink: the first generation reaches it as ``sync_peers`` (the first snapshot), later
ones as add/replace/remove_peer, exactly as the agent dispatches them; ``resync`` stops that
watcher, runs setup and starts a new one (an agent restarted over its data plane). Each ends with
``applied.json`` (generation, warnings/errors, stats). SIGTERM stops it, with ``"teardown"``
removing the data plane and iptables rules first; ``"ignore_sigterm"`` makes it a driver that
does not stop (for the test that the controller notices one).

:class:`Cluster` is the test side: hosts with a ``docker0`` bridge at the leased .1 and one
"container" namespace each, drivers started and stopped by PID, pings between containers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
POLL = 0.05
PREFIX = "/coreos.com/network"
APPLY_TIMEOUT = 10.0


# -- the driver (runs inside a host) -------------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        # The watcher logs a failed backend call with its exception: keep the exception's line.
        self.lines.append(f"{type(exc).__name__}: {exc}" if exc else record.getMessage())


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


class _Stream:
    """One watch of the :class:`_Store`, read like agent.etcd.WatchStream. The watcher calls
    ``get`` again only after it applied the batch before, so a call marks that batch done."""

    def __init__(self, store: _Store, start_revision: int) -> None:
        self.store = store
        self.handed = start_revision - 1
        self.batches: queue.Queue[list[Any]] = queue.Queue()

    def get(self, timeout: float | None = None) -> list[Any] | None:
        self.store.note_applied(self.handed)
        try:
            batch = self.batches.get(timeout=timeout)
        except queue.Empty:
            return None
        self.handed = batch[-1].kv.mod_revision
        return batch

    def cancel(self) -> None:
        self.store.forget(self)


class _Store:
    """The etcd side of the driver: ``<prefix>/subnets/`` in memory, with etcd's revisions,
    lease ids and watch events; the part of agent.etcd's client that SubnetWatcher uses."""

    def __init__(self) -> None:
        self.kvs: dict[str, Any] = {}  # key -> agent.etcd.KeyValue
        self.history: list[Any] = []  # every WatchEvent, in revision order
        self.revision = 1
        self.applied = 0  # every event up to this revision went through the watcher
        self.streams: list[_Stream] = []
        self.cond = threading.Condition()

    def get_prefix(self, prefix: str) -> tuple[list[Any], int]:
        with self.cond:
            kvs = [kv for key, kv in sorted(self.kvs.items()) if key.startswith(prefix)]
            return kvs, self.revision

    def get_ranges(self, ranges: list[Any]) -> tuple[list[list[Any]], int]:
        """Several reads at one revision (agent.subnet.snapshot's start snapshot)."""
        with self.cond:
            found = [
                [kv for key, kv in sorted(self.kvs.items())
                 if key.startswith(r.key) if r.prefix or key == r.key]
                for r in ranges
            ]  # fmt: skip
            return found, self.revision

    def watch_prefix(self, prefix: str, start_revision: int | None = None) -> _Stream:
        with self.cond:
            stream = _Stream(self, start_revision or self.revision + 1)
            missed = [e for e in self.history if e.kv.mod_revision >= stream.handed + 1]
            if missed:
                stream.batches.put(missed)
            self.streams.append(stream)
            return stream

    def forget(self, stream: _Stream) -> None:
        with self.cond:
            if stream in self.streams:
                self.streams.remove(stream)

    def note_applied(self, revision: int) -> None:
        with self.cond:
            self.applied = max(self.applied, revision)
            self.cond.notify_all()

    def write(self, values: dict[str, bytes], keep: str) -> None:
        """Make the keys under the prefix VALUES (and KEEP): one put or delete per change,
        each its own revision, all in one watch batch."""
        from agent.etcd import KeyValue, WatchEvent

        with self.cond:
            events = []
            for key in sorted(k for k in self.kvs if k not in values and k != keep):
                self.revision += 1
                old = self.kvs.pop(key)
                gone = KeyValue(key, b"", old.create_revision, self.revision, 0, 0)
                events.append(WatchEvent("delete", gone))
            for key, value in sorted(values.items()):
                old = self.kvs.get(key)
                if old is not None and old.value == value:
                    continue
                self.revision += 1
                created = old.create_revision if old else self.revision
                version = old.version + 1 if old else 1
                lease_id = 1000 + len(self.history)
                kv = KeyValue(key, value, created, self.revision, version, lease_id)
                self.kvs[key] = kv
                events.append(WatchEvent("put", kv))
            self.history += events
            if events:
                for stream in self.streams:
                    stream.batches.put(events)

    def wait_applied(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.applied >= self.revision, timeout)


class _Dispatch:
    """peers.json generations -> :class:`_Store` -> the agent's SubnetWatcher -> its
    SerialSink -> the backend: the agent's own dispatch of lease events (agent/daemon.py's
    _start_watcher wires the same parts), so a bug in it fails the data-plane tests."""

    def __init__(self, backend: Any, own: Any) -> None:
        from agent.backends.base import SerialSink
        from agent.subnet.layout import encode_lease_value, subnet_key

        self.backend = backend
        self.own = own
        self.lock = threading.Lock()  # the agent's: backend calls one at a time
        self.sink = SerialSink(backend, self.lock)
        self.store = _Store()
        self.own_key = subnet_key(PREFIX, own.subnet)
        # Our own lease is in etcd too, as in a cluster: the watcher must not route it.
        own_value = encode_lease_value(own.public_ip, own.backend_type, own.backend_data)
        self.store.write({self.own_key: own_value}, keep=self.own_key)
        self.watcher: Any = None

    def publish(self, peers: list[dict[str, Any]]) -> list[str]:
        """Write PEERS (lease dicts) into the store and wait until the watcher applied them;
        the first call starts the watcher (its first listing becomes sync_peers)."""
        from ipaddress import IPv4Network

        from agent.subnet.layout import encode_lease_value, subnet_key
        from agent.subnet.watch import SubnetWatcher

        values = {
            subnet_key(PREFIX, IPv4Network(p["subnet"])): encode_lease_value(
                p["PublicIP"], p["BackendType"], p.get("BackendData")
            )
            for p in peers
        }
        self.store.write(values, keep=self.own_key)
        if self.watcher is None:
            self.watcher = SubnetWatcher(
                self.store,  # type: ignore[arg-type] - the client calls it needs
                PREFIX,
                self.sink,
                lambda: self.own.subnet,
                own_public_ip=self.own.public_ip,
                poll_timeout=POLL,
            )
            self.watcher.start()
        deadline = time.monotonic() + APPLY_TIMEOUT
        if not self.watcher.synced.wait(APPLY_TIMEOUT) or not self.store.wait_applied(
            max(deadline - time.monotonic(), 0.1)
        ):
            return [f"driver: revision {self.store.revision} not applied in {APPLY_TIMEOUT} s"]
        return []

    def stop(self) -> None:
        """Stop the watcher (the next publish starts a new one, as a restarted agent would)."""
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            watcher.stop()


def _on_sigterm(ignore: bool) -> list[int]:
    """A list SIGTERM appends to (the loop's stop flag); IGNORE: SIGTERM does nothing at all."""
    stopping: list[int] = []
    if ignore:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    return stopping


def main(argv: list[str]) -> int:
    """The driver: see the module docstring."""
    sys.path.insert(0, str(ROOT))
    from ipaddress import IPv4Network

    from agent.backends import make_backend
    from agent.net.iface import choose_interface
    from agent.net.iptables import FlannelRules
    from agent.subnet.config import parse_config
    from agent.subnet.layout import Lease

    spec = json.loads(argv[1])
    workdir = Path(spec["dir"])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    collect = _Collect()
    logging.getLogger().addHandler(collect)
    stopping = _on_sigterm(bool(spec.get("ignore_sigterm")))

    config = parse_config(json.dumps(spec["config"]))
    iface = choose_interface(
        spec.get("iface", []), spec.get("iface_regex", []), spec.get("public_ip")
    )
    backend = make_backend(config, iface)
    data = backend.backend_data()
    own = Lease(IPv4Network(spec["subnet"]), iface.public_ip, config.backend_type, data)
    backend.setup(own)
    rules = None
    if spec.get("iptables"):
        rules = FlannelRules(config.network, own.subnet, bool(spec.get("ip_masq")))
        rules.ensure()
    _write(
        workdir / "ready.json",
        {
            "backend_data": data,
            "mtu": backend.mtu,
            "iface": iface.name,
            "pid": os.getpid(),
            "public_ip": str(iface.public_ip),
        },
    )
    dispatch = _Dispatch(backend, own)
    generation = -1
    try:
        while not stopping:
            peers_file = workdir / "peers.json"
            request = json.loads(peers_file.read_text()) if peers_file.exists() else None
            if request is None or request["generation"] == generation:
                time.sleep(POLL)
                continue
            collect.lines = errors = []
            if request.get("resync"):
                dispatch.stop()
                with dispatch.lock:
                    backend.setup(own)
                if rules is not None:
                    rules.ensure()
            errors += dispatch.publish(request["peers"])
            generation = request["generation"]
            _write(
                workdir / "applied.json",
                {"generation": generation, "errors": errors, "stats": backend.stats()},
            )
        dispatch.stop()  # as the agent stops its watcher before any teardown
    finally:
        if spec.get("teardown"):
            backend.teardown()
            if rules is not None:
                rules.teardown()
        elif hasattr(backend, "stop"):
            backend.stop()
        _write(workdir / "stopped.json", {"teardown": bool(spec.get("teardown"))})
    return 0


# -- the controller (runs in the test) -----------------------------------------------------------


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`ip ARGS` from the machine; every call here names a lab namespace with -n."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def plumb_container(host: Any, cns: str, gateway: str, container_ip: str) -> None:
    """A ``docker0`` bridge at GATEWAY/24 in HOST and a container namespace CNS at
    CONTAINER_IP behind it (veth ``vc0``/``eth0``); IP forwarding on in HOST."""
    hns = host.netns
    ip("netns", "add", cns)
    ip("-n", cns, "link", "set", "lo", "up")
    ip("-n", hns, "link", "add", "docker0", "type", "bridge")
    ip("-n", hns, "addr", "add", f"{gateway}/24", "dev", "docker0")
    ip("-n", hns, "link", "set", "docker0", "up")
    ip("-n", hns, "link", "add", "vc0", "type", "veth", "peer", "name", "eth0", "netns", cns)
    ip("-n", hns, "link", "set", "vc0", "master", "docker0", "up")
    ip("-n", cns, "addr", "add", f"{container_ip}/24", "dev", "eth0")
    ip("-n", cns, "link", "set", "eth0", "up")
    ip("-n", cns, "route", "add", "default", "via", gateway)
    host.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])


class Node:
    """One lab host with its subnet, container namespace and driver."""

    def __init__(self, host: Any, number: int, network: str, container_ns: str) -> None:
        self.host = host
        self.number = number
        prefix = network.split(".")
        self.subnet = f"{prefix[0]}.{prefix[1]}.{number}.0/24"
        self.gateway = f"{prefix[0]}.{prefix[1]}.{number}.1"
        self.container_ip = f"{prefix[0]}.{prefix[1]}.{number}.2"
        self.container_ns = container_ns
        self.dir = Path(host.base) / "driver"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready: dict[str, Any] = {}
        self.generation = 0

    def lease(self, backend_type: str) -> dict[str, Any]:
        return {
            "subnet": self.subnet,
            "PublicIP": self.ready.get("public_ip", self.host.address),
            "BackendType": backend_type,
            "BackendData": self.ready.get("backend_data"),
        }

    def read(self, name: str) -> dict[str, Any] | None:
        path = self.dir / name
        return json.loads(path.read_text()) if path.exists() else None


class Cluster:
    """N hosts of LAB, each with a container on a bridge, running BACKEND through the driver."""

    def __init__(
        self,
        lab: Any,
        backend: str,
        count: int = 3,
        network: str = "10.5.0.0/16",
        forward_policy: str = "DROP",  # what docker sets; the agent's FLANNEL-FWD must cope
        *,
        python: str = sys.executable,  # runs the driver, and so the backend
    ):
        self.lab = lab
        self.python = python
        self.forward_policy = forward_policy
        self.backend = backend
        self.network = network
        self.config: dict[str, Any] = {"Network": network, "Backend": {"Type": backend}}
        self.nodes: list[Node] = []
        for number in range(1, count + 1):
            host = lab.add_host(f"h{number}")
            node = Node(host, number, network, f"{lab.name}-c{number}")
            self.nodes.append(node)
            self._plumb(node)

    def _plumb(self, node: Node) -> None:
        plumb_container(node.host, node.container_ns, node.gateway, node.container_ip)
        node.host.run(["iptables", "-P", "FORWARD", self.forward_policy])

    # -- drivers -----------------------------------------------------------------------------

    def start(self, node: Node, **options: Any) -> dict[str, Any]:
        """Start NODE's driver (options go into its spec) and wait for ready.json."""
        node.dir.mkdir(parents=True, exist_ok=True)
        for name in ("ready.json", "applied.json", "peers.json", "stopped.json"):
            (node.dir / name).unlink(missing_ok=True)
        node.generation = 0
        spec = {"config": self.config, "subnet": node.subnet, "dir": str(node.dir)}
        spec.update({"iptables": True, "ip_masq": True, "teardown": True})
        spec.update(options)
        log = (node.dir / "driver.log").open("ab")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        node.proc = node.host.popen(
            [self.python, str(Path(__file__).resolve()), json.dumps(spec)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
        )
        log.close()

        def ready() -> dict[str, Any] | None:
            if node.proc is not None and node.proc.poll() is not None:
                raise RuntimeError(f"driver on {node.host.name} exited: {self.log(node)}")
            return node.read("ready.json")

        from tests.polling import wait_for

        node.ready = wait_for(ready, 20, f"the driver on {node.host.name}")
        return node.ready

    def start_all(self, **options: Any) -> None:
        for node in self.nodes:
            self.start(node, **options)

    def log(self, node: Node) -> str:
        path = node.dir / "driver.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def publish(self, node: Node, peers: list[dict[str, Any]], resync: bool = False) -> dict:
        """Hand NODE's driver a new set of peer leases; wait until it applied them."""
        node.generation += 1
        request = {"generation": node.generation, "peers": peers, "resync": resync}
        _write(node.dir / "peers.json", request)

        def applied() -> dict[str, Any] | None:
            if node.proc is not None and node.proc.poll() is not None:
                raise RuntimeError(f"driver on {node.host.name} exited: {self.log(node)}")
            got = node.read("applied.json")
            return got if got and got["generation"] == node.generation else None

        from tests.polling import wait_for

        return wait_for(applied, 20, f"{node.host.name} to apply generation {node.generation}")

    def mesh(self, resync: bool = False) -> list[dict[str, Any]]:
        """Every node gets every other node's lease."""
        return [
            self.publish(n, [o.lease(self.backend) for o in self.nodes if o is not n], resync)
            for n in self.nodes
        ]

    def stop(self, node: Node, timeout: float = 15) -> None:
        """SIGTERM the driver (by PID) and wait for it; SIGKILL if it hangs, then raise: a
        driver that does not stop skipped its teardown, which the test must not pass over."""
        proc, node.proc = node.proc, None
        if proc is None:
            return
        child = _child_of(proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(child or proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for pid in (child, proc.pid):
                if pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            proc.wait(timeout=5)
            raise RuntimeError(
                f"driver on {node.host.name} (pid {child or proc.pid}) ignored SIGTERM for "
                f"{timeout:g} s and was killed: {self.log(node)}"
            ) from None

    def close(self, timeout: float = 5) -> None:
        """Stop every driver and delete the container namespaces (the lab deletes the hosts).

        Every node is cleaned up first; then a driver that did not stop within TIMEOUT s of
        SIGTERM (or failed to be stopped) is raised as an error naming it, never swallowed.
        """
        errors = []
        for node in self.nodes:
            try:
                self.stop(node, timeout=timeout)
            except Exception as exc:  # collected, every node still cleaned, raised below
                errors.append(f"{type(exc).__name__}: {exc}")
            ip("netns", "delete", node.container_ns, check=False)
        if errors:
            raise RuntimeError("teardown: " + "; ".join(errors))

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- checks ------------------------------------------------------------------------------

    def ping_procs(self, pairs: list[tuple[Node, str]], count: int = 2) -> list[bool]:
        """Ping each (from node's container, to address) pair in parallel; True = all answered."""
        procs = [
            subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    src.container_ns,
                    "ping",
                    "-n",
                    "-q",
                    "-c",
                    str(count),
                    "-i",
                    "0.2",
                    "-W",
                    "2",
                    dst,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for src, dst in pairs
        ]
        results = []
        for proc in procs:
            try:
                results.append(proc.wait(timeout=15) == 0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                results.append(False)
        return results

    def ping_failures(self) -> list[str]:
        """Every container pings every other: the pairs that failed."""
        pairs = [(a, b.container_ip) for a in self.nodes for b in self.nodes if a is not b]
        ok = self.ping_procs(pairs)
        return [
            f"{a.host.name} -> {dst}" for (a, dst), good in zip(pairs, ok, strict=True) if not good
        ]

    def routes(self, node: Node) -> list[str]:
        out = ip("-n", node.host.netns, "-4", "route", "show", "table", "main").stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def run(self, node: Node, *argv: str) -> str:
        return node.host.run(list(argv)).stdout


def _child_of(pid: int) -> int | None:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    with contextlib.suppress(OSError):
        children = path.read_text().split()
        if children:
            return int(children[0])
    return None


if __name__ == "__main__":
    sys.exit(main(sys.argv))
