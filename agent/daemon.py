"""The agent's wiring: interface, config, backend, lease, files, watch, HTTP, systemd.

Order (flanneld's): choose the external interface; wait for ``<prefix>/config``; build the
backend; acquire a lease (previous subnet from subnet.env preferred); program the backend for
our lease; write subnet.env and the docker options file; then follow the remote leases and
report ready. A lost lease is re-acquired by the LeaseManager while the data plane stays up;
if the subnet changes (rare), the backend is set up again and the files are rewritten.

On SIGTERM/SIGINT the loops stop within a few seconds; the data plane and the lease stay in
place unless ``--cleanup-on-exit`` (then teardown and revoke).

Test-only hooks: see agent/hooks.py.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

from agent import __version__
from agent.backends import Backend, BackendError, ExternalInterface
from agent.backends.base import SerialSink
from agent.backends.peerset import PeerSetSink
from agent.etcd import EtcdClientBase, client_class
from agent.files import SubnetEnv, read_previous_subnet, write_docker_opts, write_subnet_env
from agent.hooks import InterfaceChooser, default_backend_factory, default_chooser
from agent.http.server import HealthServer
from agent.logs import event
from agent.net.peerchain import TUNNEL_BACKENDS
from agent.notify import Notifier
from agent.options import AgentOptions
from agent.report import AgentReport
from agent.rules import RulesKeeper
from agent.subnet.allowlist import AllowList
from agent.subnet.config import NetworkConfig, config_key
from agent.subnet.layout import Lease
from agent.subnet.lease import LeaseManager
from agent.subnet.snapshot import PrefixSnapshot, wait_for_snapshot
from agent.subnet.watch import PeerSink, SubnetWatcher

log = logging.getLogger("agent")

STOP_BUDGET = 4.0  # seconds for every thread to stop after SIGTERM
SETUP_RETRY = 5.0  # seconds before programming the data plane again after a failure
OWN_KEY_CHECK = 300.0  # seconds between reads of our own lease key (events poke it sooner)


class Agent(AgentReport):
    """One overlay-agent process. :meth:`run` blocks until stopped and returns the exit status."""

    def __init__(
        self,
        opts: AgentOptions,
        *,
        notifier: Notifier | None = None,
        chooser: InterfaceChooser | None = None,
        backend_factory: Callable[[NetworkConfig, ExternalInterface], Backend] | None = None,
    ) -> None:
        self.opts = opts
        self.notifier = notifier or Notifier()
        self._chooser = chooser
        self._backend_factory = backend_factory
        self.stop_event = threading.Event()
        self._wake = threading.Event()
        self._lease_changed = threading.Event()
        self._lock = threading.Lock()  # serialises every backend call
        self.client: EtcdClientBase | None = None
        self.config: NetworkConfig | None = None
        self.backend: Backend | None = None
        self.rules: RulesKeeper | None = None
        self.leases: LeaseManager | None = None
        self.watcher: SubnetWatcher | None = None
        self._snapshot: PrefixSnapshot | None = None  # the start snapshot, until the watch uses it
        self.programmed: Lease | None = None
        self.phase = "starting"
        self.detail = ""
        self.lease_held = False
        self.dataplane_ok = False
        self.files_written = False
        self.reacquired = 0  # leases acquired again after a loss
        self._lease_id: int | None = None
        self._retry_at: float | None = None
        self._beat = time.monotonic()
        self.server = HealthServer(
            opts.healthz_ip,
            opts.healthz_port,
            health=self.health,
            ready=self.ready,
            metrics=self.metrics,
        )

    # -- run -----------------------------------------------------------------------------------

    def request_stop(self, *_: object) -> None:
        """Ask every loop to stop (signal handler)."""
        if self.stop_event.is_set():
            os._exit(1)  # second signal: the operator insists
        self.stop_event.set()
        self._wake.set()

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; the exit status (0 stopped, 1 fatal error)."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        event(log, logging.INFO, "start", f"overlay-agent {__version__}", **self.opts.describe())
        try:
            self.server.start()
        except OSError as exc:
            event(log, logging.ERROR, "healthz-failed", f"cannot listen: {exc}")
            return 1
        threading.Thread(target=self._watchdog, name="watchdog", daemon=True).start()
        try:
            return self._run()
        except Exception as exc:
            log.exception("fatal: %s", exc)
            return 1
        finally:
            self.shutdown()

    def _run(self) -> int:
        opts = self.opts
        self._phase("choosing-interface")
        try:
            iface = (self._chooser or default_chooser())(
                list(opts.ifaces),
                list(opts.iface_regexes),
                str(opts.public_ip) if opts.public_ip else None,
            )
        except Exception as exc:
            event(log, logging.ERROR, "no-interface", f"cannot choose the interface: {exc}")
            return 1
        event(
            log, logging.INFO, "interface", iface=iface.name, address=iface.address,
            public_ip=iface.public_ip, mtu=iface.mtu,
        )  # fmt: skip
        try:
            self.client = client_class(opts.etcd_transport)(
                list(opts.etcd_endpoints),
                ca_file=opts.etcd_cafile,
                cert_file=opts.etcd_certfile,
                key_file=opts.etcd_keyfile,
                username=opts.etcd_username,
                password=opts.etcd_password,
            )
        except ValueError as exc:
            event(log, logging.ERROR, "etcd-client", str(exc))
            return 1
        key = config_key(opts.etcd_prefix)
        self._phase("waiting-for-config", f"{key} at {','.join(opts.etcd_endpoints)}")
        found = wait_for_snapshot(
            self.client, opts.etcd_prefix, self.stop_event, interval=opts.config_poll_interval
        )
        if found is None:
            return 0
        config, self._snapshot = found
        self.config = config
        event(log, logging.INFO, "config", network=config.network, backend=config.backend_type)
        try:
            backend = (self._backend_factory or default_backend_factory())(config, iface)
            data = backend.backend_data()
        except (BackendError, OSError) as exc:
            event(log, logging.ERROR, "backend-failed", f"{config.backend_type}: {exc}")
            return 1
        self.backend = backend
        tunnel = backend.type_name in TUNNEL_BACKENDS  # not host-gw, nor a test stand-in
        self.rules = RulesKeeper(
            config.network,
            forward=opts.iptables_forward_rules,
            ip_masq=opts.ip_masq,
            resync=opts.iptables_resync,
            peer_port=getattr(backend, "port", None) if tunnel else None,
        )
        self._start_lease(self.client, config, backend, data, iface.public_ip)
        return self._loop()

    def _start_lease(
        self,
        client: EtcdClientBase,
        config: NetworkConfig,
        backend: Backend,
        data: dict[str, Any] | None,
        public_ip: IPv4Address,
    ) -> None:
        previous = read_previous_subnet(self.opts.subnet_file)
        snapshot = self._snapshot
        self.leases = LeaseManager(
            client,
            self.opts.etcd_prefix,
            config,
            public_ip,
            data,
            backend_type=backend.type_name or config.backend_type,
            ttl=self.opts.lease_ttl,
            renew_margin=self.opts.renew_margin,
            conflict_interval=self.opts.conflict_check_interval,
            previous_subnet=previous,
            on_change=self._on_lease_change,
            initial_leases=snapshot.subnets if snapshot is not None else None,
            # The SubnetWatcher's watch of every lease pokes the manager when our key changes
            # (and replays what happened since the snapshot): no stream of its own, and its
            # periodic check of the key is only a safety net.
            watch_own_key=False,
            check_interval=OWN_KEY_CHECK,
        )
        self._phase("acquiring-lease", f"previous subnet {previous}" if previous else "")
        self.leases.start()

    def _on_lease_change(self, old: Lease | None, new: Lease | None) -> None:
        self._lease_changed.set()
        self._wake.set()

    def _loop(self) -> int:
        while not self.stop_event.is_set():
            self._wake.clear()  # before looking at the flags: no wake-up is lost
            self._beat = time.monotonic()
            if self.rules is not None and self.dataplane_ok:
                self.rules.tick()
            if self._retry_at is not None and time.monotonic() >= self._retry_at:
                self._retry_at = None
                self._lease_changed.set()
            current = self._need()[3].current
            if current is not None and current.lease_id != self._lease_id:
                if self._lease_id is not None:
                    self.reacquired += 1
                    event(log, logging.WARNING, "lease-reacquired", subnet=current.subnet)
                self._lease_id = current.lease_id
            if self._lease_changed.is_set():
                self._lease_changed.clear()
                if not self.apply_lease(current):
                    return 1
            self._wake.wait(1.0)
        return 0

    def apply_lease(self, lease: Lease | None) -> bool:
        """Program the data plane and files for ``lease``; False on a fatal first failure."""
        if lease is None:
            self.lease_held = False
            self._phase("lease-lost", "re-acquiring; the data plane stays up")
            return True
        self.lease_held = True
        first = self.programmed is None
        if not first and self.dataplane_ok and self.programmed.subnet == lease.subnet:
            event(log, logging.INFO, "lease-kept", "lease held; data plane untouched",
                  subnet=lease.subnet)  # fmt: skip
        elif not self._setup(lease):
            return not first
        if not self._write_files(lease):
            return not first
        if self.watcher is None:
            self._start_watcher()
        self._phase("ready", f"subnet {lease.subnet}")
        if first:
            self.notifier.ready(f"ready: subnet {lease.subnet}")
            event(log, logging.INFO, "ready", subnet=lease.subnet, file=self.opts.subnet_file)
        return True

    def _need(self) -> tuple[EtcdClientBase, NetworkConfig, Backend, LeaseManager]:
        """The parts built once the config is known."""
        if self.client is None or self.config is None or self.backend is None:
            raise RuntimeError("the agent has no config yet")
        if self.leases is None:
            raise RuntimeError("the agent has no lease manager yet")
        return self.client, self.config, self.backend, self.leases

    def _setup(self, lease: Lease) -> bool:
        backend = self._need()[2]
        old = self.programmed
        self._phase("programming", f"subnet {lease.subnet}")
        try:
            with self._lock:
                backend.setup(lease)
        except Exception as exc:
            self.dataplane_ok = False
            self._retry_at = time.monotonic() + SETUP_RETRY
            event(log, logging.ERROR, "setup-failed", f"data plane setup failed: {exc}",
                  subnet=lease.subnet)  # fmt: skip
            return False
        self.dataplane_ok = True
        if self.rules is not None:
            self.rules.apply(lease.subnet)
        self.programmed = lease
        if old is not None:
            event(log, logging.WARNING, "subnet-changed", "data plane set up again",
                  old=old.subnet, new=lease.subnet)  # fmt: skip
        return True

    def _write_files(self, lease: Lease) -> bool:
        _, config, backend, _ = self._need()
        env = SubnetEnv(config.network, lease.subnet, backend.mtu, self.opts.ip_masq)
        try:
            write_subnet_env(env, self.opts.subnet_file)
            write_docker_opts(env, self.opts.docker_opts_file)
        except OSError as exc:
            self.files_written = False
            self._retry_at = time.monotonic() + SETUP_RETRY
            event(log, logging.ERROR, "files-failed", f"cannot write: {exc}")
            return False
        self.files_written = True
        event(log, logging.INFO, "files-written", subnet_file=self.opts.subnet_file,
              docker_opts_file=self.opts.docker_opts_file, mtu=env.mtu)  # fmt: skip
        return True

    def _start_watcher(self) -> None:
        client, _, backend, leases = self._need()

        def own() -> Any:
            current = leases.current
            return current.subnet if current is not None else None

        sink: PeerSink = SerialSink(backend, self._lock)
        if self.rules is not None:
            sink = PeerSetSink(sink, self.rules.set_peers)
        self.watcher = SubnetWatcher(
            client,
            self.opts.etcd_prefix,
            sink,
            own,
            on_own_event=leases.poke,
            own_public_ip=leases.public_ip,
            allowlist=AllowList(self.opts.etcd_prefix, leases.public_ip),
            allowlist_interval=self.opts.allowlist_check_interval,
            snapshot=self._snapshot,
        )
        self._snapshot = None  # used once: later re-lists read a fresh one
        self.watcher.start()

    def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None:
            return
        while not self.stop_event.wait(interval):
            if self.health()[0]:
                self.notifier.watchdog()

    def shutdown(self) -> None:
        """Stop every thread within STOP_BUDGET; cleanup only with --cleanup-on-exit."""
        self._phase("stopping")
        self.notifier.stopping()
        self.stop_event.set()
        deadline = time.monotonic() + STOP_BUDGET

        def left() -> float:
            return max(deadline - time.monotonic(), 0.1)

        if self.watcher is not None:
            self.watcher.stop(timeout=left())
        cleanup = self.opts.cleanup_on_exit
        if self.leases is not None:
            self.leases.stop(revoke=cleanup, timeout=left())
        if cleanup and self.backend is not None and self.programmed is not None:
            locked = self._lock.acquire(timeout=left())  # a stuck peer update must not hang us
            try:
                self.backend.teardown()
                if self.rules is not None:
                    self.rules.teardown()
            except Exception as exc:
                event(log, logging.ERROR, "teardown-failed", str(exc))
            finally:
                if locked:
                    self._lock.release()
        self.server.stop(timeout=left())
        if self.client is not None:
            self.client.close()
        lease = self.leases.current if self.leases is not None else None
        event(log, logging.INFO, "stopped", cleanup=cleanup,
              lease=("revoked" if cleanup else "kept") if lease else None)  # fmt: skip
