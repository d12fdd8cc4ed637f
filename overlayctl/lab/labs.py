"""`overlayctl lab up|down|list|exec|shell`: whole labs of full hosts, made and removed as one."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from overlayctl.errors import BadInput, Conflict, OverlayctlError
from overlayctl.lab import cgroups, full, limits, netns, state, template
from overlayctl.lab.sshkeys import known_hosts_line, write_keypair
from overlayctl.lab.state import HostRecord, LabState
from overlayctl.lab.system import require_root_linux, require_tools

BOOT_TIMEOUT_S = 120.0
LAB_TOOLS = ("ip", "systemd-nspawn", "ssh", "mount", "umount")


@dataclass(frozen=True)
class HostHealth:
    name: str
    address: str
    ssh_ok: bool
    system_state: str  # `systemctl is-system-running`: running, degraded, ...
    failed_units: str
    memory_mb: float | None


def names(lab: str) -> tuple[str, str]:
    """(switch namespace, workstation namespace) of a lab."""
    return f"ovl-{lab}-lan", f"ovl-{lab}-ws"


def up(name: str, hosts: int, subnet: str, progress=print) -> LabState:
    """Create a lab of HOSTS full hosts; on any failure, remove what was made and re-raise."""
    state.check_name(name)
    if not 1 <= hosts <= 64:
        raise BadInput(f"--hosts {hosts}: choose 1 to 64")
    ws_addr, host_addrs, prefix = state.addresses(subnet, hosts)
    require_root_linux()
    require_tools(*LAB_TOOLS)
    tpl = template.find_template()
    if tpl is None:
        progress("lab: building the template rootfs (once; about 2 minutes)")
        tpl = template.build_template()
    with state.locked(name):
        if state.load(name) is not None or state.lab_dir(name).exists():
            raise Conflict(
                f"lab {name!r} already exists; remove it with `overlayctl lab down --name {name}`"
            )
        switch, ws = names(name)
        lab = LabState(
            name=name,
            tier="full",
            subnet=subnet,
            switch_netns=switch,
            workstation_netns=ws,
            workstation_address=ws_addr,
            template=str(tpl.rootfs),
        )
        for i, addr in enumerate(host_addrs, start=1):
            host = f"node{i}"
            lab.hosts.append(
                HostRecord(
                    name=host,
                    address=addr,
                    netns=f"ovl-{name}-{host}",
                    cgroup=f"overlayctl-{name}-{host}",
                    root=str(full.host_dir(lab.dir, host) / "root"),
                )
            )
        lab.save()
        try:
            raised = limits.ensure(hosts)
            if raised:  # a change to this machine: on stderr, whatever the output format
                print(raised, file=sys.stderr, flush=True)
            _build(lab, tpl.rootfs, prefix, progress)
        except BaseException:
            progress(f"lab: {name}: failed, removing what was made")
            _teardown(lab)
            raise
    return lab


def _build(lab: LabState, template_rootfs: Path, prefix: int, progress) -> None:
    started = time.monotonic()
    client_key = write_keypair(lab.ssh_key, f"overlayctl-lab-{lab.name}")
    netns.create_switch(lab.switch_netns)
    netns.add(lab.workstation_netns)
    netns.attach(
        lab.switch_netns, "p-ws", lab.workstation_netns, f"{lab.workstation_address}/{prefix}"
    )
    known = []
    for host in lab.hosts:
        netns.add(host.netns)
        netns.attach(lab.switch_netns, f"p-{host.name}", host.netns, f"{host.address}/{prefix}")
        base = full.host_dir(lab.dir, host.name)
        full.mount_root(template_rootfs, base)
        host_key = full.seed_host(Path(host.root), host.name, client_key)
        known.append(known_hosts_line([host.name, host.address], host_key))
    lab.known_hosts.write_text("\n".join(known) + "\n")
    for host in lab.hosts:
        host.pid = full.boot(host, full.host_dir(lab.dir, host.name) / "console.log")
    lab.save()
    progress(f"lab: {lab.name}: {len(lab.hosts)} hosts booting")
    health = wait_ready(lab)
    write_inventory(lab)
    for h in health:
        progress(
            f"lab: {h.name} {h.address}: ssh ok, systemd {h.system_state}"
            + (f" (failed: {h.failed_units})" if h.failed_units else "")
        )
    progress(f"lab: {lab.name}: up in {time.monotonic() - started:.1f} s")


def ssh_argv(lab: LabState, host: HostRecord, command: str, connect_timeout: int = 5) -> list[str]:
    """An ssh command line run from the workstation namespace, with strict host key checking."""
    return netns.exec_argv(
        lab.workstation_netns,
        [
            "ssh",
            "-q",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={lab.known_hosts}",
            "-o",
            f"ConnectTimeout={connect_timeout}",
            "-i",
            str(lab.ssh_key),
            f"root@{host.address}",
            command,
        ],
    )


def _ssh(lab: LabState, host: HostRecord, command: str, timeout: float = 30) -> tuple[int, str]:
    try:
        proc = subprocess.run(
            ssh_argv(lab, host, command),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return 255, ""
    return proc.returncode, proc.stdout.strip()


def _wait_host(lab: LabState, host: HostRecord, deadline: float) -> HostHealth:
    while True:
        # ssh exits 255 on its own errors (not yet listening); `--wait` returns once booted.
        rc, out = _ssh(lab, host, "systemctl is-system-running --wait", timeout=60)
        if rc != 255:
            break
        if time.monotonic() > deadline or not full.is_running(host):
            raise OverlayctlError(
                f"lab {lab.name}: {host.name} ({host.address}) did not answer over SSH; "
                f"see {full.host_dir(lab.dir, host.name) / 'console.log'}"
            )
        time.sleep(0.5)
    failed = ""
    if out != "running":
        failed = _ssh(lab, host, "systemctl --failed --no-legend --plain | cut -d' ' -f1")[1]
    mem = cgroups.memory_bytes(host.cgroup)
    return HostHealth(
        host.name,
        host.address,
        True,
        out,
        " ".join(failed.split()),
        round(mem / 2**20, 1) if mem else None,
    )


def wait_ready(lab: LabState, timeout: float = BOOT_TIMEOUT_S) -> list[HostHealth]:
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(max_workers=min(8, len(lab.hosts))) as pool:
        return list(pool.map(lambda h: _wait_host(lab, h, deadline), lab.hosts))


def health(lab: LabState) -> list[HostHealth]:
    """SSH and systemd state of every host of a running lab (no waiting)."""
    return wait_ready(lab, timeout=0)


def write_inventory(lab: LabState) -> Path:
    """The lab's cluster.yaml, in the format `overlayctl init` reads."""
    doc = {
        "cluster": {
            "name": lab.name,
            "network": "172.21.0.0/16",
            "backend": "vxlan",
            "os": "debian",
        },
        "ssh": {"user": "root", "key": str(lab.ssh_key), "known_hosts": str(lab.known_hosts)},
        "hosts": [{"name": h.name, "address": h.address, "iface": "eth0"} for h in lab.hosts],
    }
    header = (
        f"# Written by `overlayctl lab up --name {lab.name}`. Run overlayctl from the lab's\n"
        f"# workstation namespace: `overlayctl lab shell --name {lab.name}`.\n"
    )
    lab.inventory.write_text(header + yaml.safe_dump(doc, sort_keys=False))
    return lab.inventory


def down(name: str, progress=print) -> bool:
    """Remove everything `up` made for NAME. Returns False when there was no such lab."""
    state.check_name(name)
    require_root_linux()
    with state.locked(name):
        lab = state.load(name)
        if lab is None:
            if state.lab_dir(name).exists():
                shutil.rmtree(state.lab_dir(name))
            return False
        _teardown(lab)
    progress(f"lab: {name}: removed")
    return True


def _teardown(lab: LabState) -> None:
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(lab.hosts)))) as pool:
        list(pool.map(full.stop, lab.hosts))
    stuck: list[str] = []
    for host in lab.hosts:
        full.unmount_root(full.host_dir(lab.dir, host.name))
        stuck += cgroups.remove(host.cgroup)
        netns.delete(host.netns)
    netns.delete(lab.workstation_netns)
    netns.delete(lab.switch_netns)
    mounted = [h.name for h in lab.hosts if os.path.ismount(h.root)]
    if mounted or stuck:
        raise OverlayctlError(
            f"lab {lab.name}: could not remove everything (mounted: {mounted}, cgroups: {stuck})"
        )
    shutil.rmtree(lab.dir)


def restart_host(name: str, host_name: str, progress=print) -> HostHealth:
    """Power a host off and boot it again (its disk, network and keys stay): a reboot."""
    lab = existing(name)
    host = lab.host(host_name)
    full.stop(host)
    host.pid = full.boot(host, full.host_dir(lab.dir, host.name) / "console.log")
    lab.save()
    health = _wait_host(lab, host, time.monotonic() + BOOT_TIMEOUT_S)
    progress(f"lab: {host.name} rebooted, systemd {health.system_state}")
    return health


def exec_on_host(name: str, host: str, argv: list[str]) -> int:
    """Run ARGV on a lab host over SSH from the workstation namespace; returns its exit code."""
    lab = existing(name)
    return subprocess.run(ssh_argv(lab, lab.host(host), shlex.join(argv)), check=False).returncode


def shell(name: str, argv: list[str] | None = None) -> None:
    """Replace this process with a shell (or ARGV) in the lab's workstation namespace."""
    lab = existing(name)
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "OVERLAYCTL_INVENTORY": str(lab.inventory),
        "OVERLAYCTL_LAB": lab.name,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "PS1": f"[lab {lab.name} workstation] \\w# ",
    }
    cmd = argv or [os.environ.get("SHELL", "/bin/bash")]
    os.execvpe("ip", netns.exec_argv(lab.workstation_netns, cmd), env)  # noqa: S606


def existing(name: str) -> LabState:
    state.check_name(name)
    require_root_linux()
    lab = state.load(name)
    if lab is None:
        raise BadInput(f"no lab named {name!r} (see `overlayctl lab list`)")
    return lab


def describe(lab: LabState) -> dict[str, object]:
    running = sum(1 for h in lab.hosts if full.is_running(h))
    status = "running" if running == len(lab.hosts) else "stopped" if not running else "partial"
    return {
        "name": lab.name,
        "tier": lab.tier,
        "hosts": len(lab.hosts),
        "running": running,
        "state": status,
        "subnet": lab.subnet,
        "inventory": str(lab.inventory),
    }
