"""The README's "Real VMs (Vagrant)" page run for real, step by step, on VMs the Vagrantfile makes.

One entry point for both CIs, so they cannot drift: the `vm` test tier
(tests/vm/test_vagrant_page.py) and .github/workflows/vagrant.yml both run

    python -m tests.vm.vagrant_page [--host-libvirt --driver kvm --box debian/bookworm64]

The page: `vagrant up` (3 VMs), `overlayctl inventory from-vagrant`, `init` (then again: 0
changes), `verify` N x N, `status`, `vagrant reload` of one VM then `verify`, `reset --yes`,
`vagrant destroy -f`. The log shows each guest's kernel and `systemd-detect-virt`, every step's
time, the box's (cold: built; warm: cached) and the peak resident memory of everything the run
started.

Here (the default) nothing of the run can reach beyond this machine: the box is built locally
(`overlayctl lab box`), and libvirtd, virtlogd, dnsmasq, the VMs, vagrant and overlayctl all run
inside a network namespace made for the run (tests/vm/isolation.py), with software emulation
(QEMU TCG; this machine's KVM cannot run a stock kernel, so KVM is only ever used when --driver
kvm asks for it). With --host-libvirt (GitHub's runners) the machine's own libvirt, a box from
Vagrant Cloud and the provider's NAT network are used instead, and the VMs fetch packages.
Whatever fails, the VMs, the daemons (by PID), the namespace and the run's folders are removed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.vm import isolation
from tests.vm.steps import Page, Settings

RUNS = Path("/var/tmp/overlayctl-vm")
REPO = Path(__file__).resolve().parents[2]


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m tests.vm.vagrant_page", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--overlayctl", default=shutil.which("overlayctl") or "overlayctl",
                    help="the overlayctl to test (default: the one on PATH)")  # fmt: skip
    ap.add_argument("--vms", type=int, default=3)
    ap.add_argument("--memory", type=int, default=1024, help="MiB of RAM per VM")
    ap.add_argument("--driver", choices=("qemu", "kvm"), default="qemu",
                    help="libvirt domain type; kvm only when asked (qemu: TCG)")  # fmt: skip
    ap.add_argument("--host-libvirt", action="store_true",
                    help="this machine's libvirt and NAT network (CI runners)")  # fmt: skip
    ap.add_argument("--box", default="", help="a box name instead of the locally built one")
    ap.add_argument("--family", choices=("debian", "rhel"), default="debian")
    ap.add_argument("--summary", type=Path, help="write the timings and results here (JSON)")
    ap.add_argument("--timeout", type=float, default=1500, help="seconds for the whole page")
    ap.add_argument("--hold-on-failure", type=float, default=0, metavar="SECONDS",
                    help="debugging: keep the VMs this long after a failure")  # fmt: skip
    ap.add_argument("--inside", type=Path, help=argparse.SUPPRESS)  # the namespace's half
    return ap.parse_args(argv)


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.inside:
        return inside(args.inside)
    if os.geteuid() != 0:
        say("needs root (network namespaces, libvirt)")
        return 3
    started = time.monotonic()
    name = f"ovm{secrets.token_hex(4)}"
    run = RUNS / name
    run.mkdir(parents=True)
    summary: dict = {"name": name, "host_kernel": os.uname().release, "ok": False}
    try:
        with isolation.PeakMemory(lambda: isolation.descendants(os.getpid())) as build_memory:
            box, box_file = ensure_box(args, summary)
        summary["box"]["peak_rss_mib"] = build_memory.peak_kib // 1024
        settings = Settings(
            run=run, repo=REPO, overlayctl=args.overlayctl, vms=args.vms, memory=args.memory,
            driver=args.driver, box=box, box_file=box_file, family=args.family,
            isolated=not args.host_libvirt, vagrant_home=vagrant_home(args), timeout=args.timeout,
            hold_on_failure=args.hold_on_failure,
        )  # fmt: skip
        (run / "settings.json").write_text(settings.to_json())
        if args.host_libvirt:
            Page(settings, say).run()
        else:
            namespaced(run, args.timeout + args.hold_on_failure + 120, summary)
        summary.update(json.loads((run / "page.json").read_text()))
    except (OSError, subprocess.SubprocessError, RuntimeError, TimeoutError, ValueError) as exc:
        say(f"FAILED: {exc}")
        if (run / "page.json").is_file():
            summary.update(json.loads((run / "page.json").read_text()))
    finally:
        summary["total_seconds"] = round(time.monotonic() - started, 1)
        shutil.rmtree(run, ignore_errors=True)
        report(summary, args.summary)
    return 0 if summary["ok"] else 1


def ensure_box(args: argparse.Namespace, summary: dict) -> tuple[str, str]:
    """The local box (built once per recipe, niced) unless --box names another one."""
    if args.box:
        summary["box"] = {"name": args.box, "state": "given"}
        return args.box, ""
    started = time.monotonic()
    done = subprocess.run(["nice", "-n", "10", args.overlayctl, "lab", "box", "-o", "json"],
                          capture_output=True, text=True, timeout=2400, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"overlayctl lab box failed: {(done.stderr or done.stdout).strip()}")
    doc = json.loads(done.stdout)
    state = "cold (built now)" if doc["built"] else "warm (cached)"
    seconds = round(time.monotonic() - started, 1)
    summary["box"] = {"name": doc["name"], "state": state, "seconds": seconds}
    say(f"box {doc['name']}: {state} in {seconds} s ({doc['file']})")
    return doc["name"], doc["file"]


def vagrant_home(args: argparse.Namespace) -> str:
    """Where Vagrant keeps boxes: beside the local box's cache (added once per recipe)."""
    if args.host_libvirt:
        return os.environ.get("VAGRANT_HOME", str(Path.home() / ".vagrant.d"))
    cache = Path(os.environ.get("OVERLAYCTL_BOX_CACHE", "/var/cache/overlayctl/box"))
    return str(cache / "vagrant.d")


def namespaced(run: Path, timeout: float, summary: dict) -> None:
    """The page in a new namespace: this process's half makes it, watches, and cleans up."""
    isolation.prepare_libvirt_dirs(run)
    ns = isolation.Namespace(run.name)
    say(f"network namespace {ns.name}: only a loopback, routes: {ns.routes().strip() or 'none'}")
    argv = ns.exec_argv([sys.executable, "-m", "tests.vm.vagrant_page", "--inside", str(run)])
    try:
        with isolation.PeakMemory(lambda: isolation.pids_in_netns(ns.inode)) as memory:
            proc = subprocess.Popen(argv, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                say(f"the page did not finish in {timeout:.0f} s: stopping it")
                isolation.terminate([proc.pid])
                proc.wait(30)
        summary["peak_rss_mib"] = memory.peak_kib // 1024
    finally:
        left = ns.close()
        say(f"namespace {ns.name} deleted; processes killed by PID at the end: {left or 'none'}")
        summary["leftover_pids"] = left


def inside(run: Path) -> int:
    """The namespace's half: libvirt's state bound over the system paths, the daemons, the page."""
    settings = Settings.from_json((run / "settings.json").read_text())
    page = Page(settings, say)
    try:
        isolation.bind_libvirt_dirs(run)
        page.daemons = isolation.start_daemons(run, say)
        networks = page.sh(["virsh", "-c", "qemu:///system", "net-list", "--all", "--name"], 60)
        if "default" in networks.stdout.split():
            raise RuntimeError("libvirt's NAT network `default` exists in the namespace")
        page.run()
    except (OSError, subprocess.SubprocessError, RuntimeError, TimeoutError) as exc:
        say(f"FAILED: {exc}")
        page.result["error"] = str(exc)
        page.save()
    finally:
        isolation.stop_daemons(run)
    return 0 if page.result["ok"] else 1


def report(summary: dict, path: Path | None) -> None:
    say("summary:")
    for step, seconds in summary.get("steps", {}).items():
        say(f"  {step:<28} {seconds:>7.1f} s")
    box = summary.get("box", {})
    say(f"  box: {box.get('state', '?')}, {box.get('seconds', 0)} s, "
        f"peak RSS {box.get('peak_rss_mib', '?')} MiB")  # fmt: skip
    say(f"  peak RSS of the namespace (VMs, libvirt, vagrant, overlayctl): "
        f"{summary.get('peak_rss_mib', '?')} MiB")  # fmt: skip
    say(f"  total {summary.get('total_seconds')} s; ok: {summary['ok']}")
    if path:
        path.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
