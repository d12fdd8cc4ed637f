"""The steps of the README's Vagrant page, as tests/vm/vagrant_page.py runs them (one place).

Each step is a real program (vagrant, overlayctl, ssh) with a bounded time; its time goes into
the result and its output into the log. A failed check names the step and what was seen.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from overlayctl.lab.template import BUSYBOX_IMAGE, BUSYBOX_IMAGE_TAG

PULLED_IMAGE = "busybox:latest"  # --host-libvirt: the VMs reach a registry


@dataclass(frozen=True)
class Settings:
    run: Path
    repo: Path
    overlayctl: str
    vms: int
    memory: int
    driver: str
    box: str
    box_file: str
    family: str
    isolated: bool
    vagrant_home: str
    timeout: float = 1500
    hold_on_failure: float = 0

    def to_json(self) -> str:
        return json.dumps({k: str(v) if isinstance(v, Path) else v
                           for k, v in dataclasses.asdict(self).items()})  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> Settings:
        doc = json.loads(text)
        return cls(**{**doc, "run": Path(doc["run"]), "repo": Path(doc["repo"])})

    @property
    def names(self) -> list[str]:
        return [f"node{i}" for i in range(1, self.vms + 1)]

    def environment(self) -> dict[str, str]:
        """What `vagrant` and the Vagrantfile read; the libvirt settings only where asked."""
        env = {
            "VAGRANT_CWD": str(self.repo),
            "VAGRANT_DOTFILE_PATH": str(self.run / "dot-vagrant"),
            "VAGRANT_HOME": self.vagrant_home,
            "VAGRANT_CHECKPOINT_DISABLE": "1",
            "VAGRANT_NO_COLOR": "1",
            "VAGRANT_DEFAULT_PROVIDER": "libvirt",
            "OVERLAYCTL_VMS": str(self.vms),
            "OVERLAYCTL_FAMILY": self.family,
            "OVERLAYCTL_BOX": self.box,
            "OVERLAYCTL_PUBKEY": str(self.run / "id_ed25519.pub"),
            "OVERLAYCTL_MEMORY": str(self.memory),
            "OVERLAYCTL_LIBVIRT_DRIVER": self.driver,
        }
        if self.driver == "qemu":  # software emulation: a plain CPU model, a smaller code cache
            env.update(OVERLAYCTL_LIBVIRT_CPU_MODEL="qemu64", OVERLAYCTL_LIBVIRT_TB_CACHE="128")
        if self.isolated:
            env.update(OVERLAYCTL_LIBVIRT_NETWORK="isolated",
                       OVERLAYCTL_CONSOLE_DIR=str(self.run / "console"))  # fmt: skip
        return env


class StepFailed(RuntimeError):
    pass


def stream(
    argv: list[str], *, env: dict[str, str], cwd: Path, timeout: float,
    say: Callable[[str], None], show_stdout: bool,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """ARGV with its stderr (and stdout when SHOW_STDOUT) in the log line by line as it comes,
    so the log shows where a long step spends its time; stdout is also kept whole (JSON). After
    TIMEOUT the process group it was started in (its own) is killed."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=cwd, start_new_session=True)  # fmt: skip
    out: list[str] = []
    err: list[str] = []

    def pump(pipe: IO[str], keep: list[str], show: bool) -> None:
        for line in pipe:
            keep.append(line)
            if show:
                say("  " + line.rstrip("\n"))

    pumps = [threading.Thread(target=pump, args=(proc.stdout, out, show_stdout), daemon=True),
             threading.Thread(target=pump, args=(proc.stderr, err, True), daemon=True)]  # fmt: skip
    for thread in pumps:
        thread.start()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        raise StepFailed(f"`{' '.join(argv[:3])}` did not finish in {timeout:.0f} s") from None
    finally:
        for thread in pumps:
            thread.join(10)
    return subprocess.CompletedProcess(argv, proc.returncode, "".join(out), "".join(err))


class Page:
    """The page's steps against the VMs; `result` is what vagrant_page.py reports."""

    def __init__(self, settings: Settings, say: Callable[[str], None]) -> None:
        self.s = settings
        self.say = say
        self.daemons: dict[str, int] = {}
        self.result: dict = {"ok": False, "steps": {}, "guests": {}}
        self.deadline = time.monotonic() + settings.timeout
        self.env = {**os.environ, **settings.environment()}
        self.inventory = settings.run / "cluster.yaml"
        self.up = False

    # -- running things ------------------------------------------------------------------
    def sh(self, argv: list[str], timeout: float, *, check: bool = True, show: bool = True):
        """ARGV bounded by TIMEOUT and the page's deadline; stderr (and stdout when SHOW) logged
        as it comes. A failure with CHECK raises StepFailed (its stdout logged then)."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise StepFailed("out of time before: " + " ".join(argv))
        self.say("$ " + " ".join(argv))
        done = stream(argv, env=self.env, cwd=self.s.run, timeout=min(timeout, left),
                      say=self.say, show_stdout=show)  # fmt: skip
        if check and done.returncode != 0:
            if not show:
                for line in done.stdout.rstrip().splitlines():
                    self.say("  " + line)
            raise StepFailed(f"`{' '.join(argv[:3])}` exited {done.returncode}")
        return done

    def step(self, name: str, action: Callable[[], object]) -> None:
        self.say(f"== {name}")
        started = time.monotonic()
        try:
            action()
        except BaseException:
            self.result["failed_step"] = name
            raise
        finally:
            self.result["steps"][name] = round(time.monotonic() - started, 1)
        self.say(f"== {name}: {self.result['steps'][name]:.1f} s")

    def vagrant(self, *args: str, timeout: float = 120, show: bool = True):
        return self.sh(["vagrant", *args], timeout, show=show)

    def overlayctl(self, *args: str, timeout: float = 300, show: bool = True):
        return self.sh([self.s.overlayctl, *args, "-i", str(self.inventory)], timeout, show=show)

    def json_of(self, *args: str, timeout: float = 300, check: bool = True) -> dict:
        done = self.sh([self.s.overlayctl, *args, "-i", str(self.inventory), "-o", "json"],
                       timeout, check=check, show=False)  # fmt: skip
        return json.loads(done.stdout)

    # -- the page ----------------------------------------------------------------------
    def run(self) -> None:
        """Every step; whatever happens, the VMs are destroyed and the result saved."""
        try:
            self.sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                     str(self.s.run / "id_ed25519")], 30, show=False)  # fmt: skip
            self.step("box add", self.box_add)
            (self.s.run / "console").mkdir(exist_ok=True)
            self.up = True
            self.step(f"vagrant up ({self.s.vms} VMs)", lambda: self.vagrant("up", timeout=900))
            self.step("guest kernels", self.guests)
            if self.s.family == "rhel" and not self.s.isolated:
                self.step("RHEL repositories", self.rhel_repositories)
            self.step("inventory from-vagrant", self.from_vagrant)
            self.step("init", lambda: self.overlayctl("init", "--etcd-timeout", "300", timeout=900))
            self.step("init again (0 changes)", self.init_again)
            self.step("verify", self.verify)
            self.step("status", self.status)
            self.step("vagrant reload node2", lambda: self.vagrant("reload", "node2", timeout=600))
            self.step("status after reload", lambda: self.status(wait=300))
            self.step("verify after reload", self.verify)
            self.step("reset --yes", lambda: self.overlayctl("reset", "--yes", timeout=600))
            self.step("vagrant destroy -f", self.destroy)
            self.result["ok"] = True
        except (StepFailed, OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
            self.result["error"] = str(exc)
            self.say(f"FAILED in {self.result.get('failed_step', '?')}: {exc}")
            self.consoles()
            if self.s.hold_on_failure > 0:
                self.say(f"holding the VMs {self.s.hold_on_failure:.0f} s: ip netns exec "
                         f"{self.s.run.name} ssh -i {self.s.run}/id_ed25519 -o UserKnownHostsFile="
                         f"{self.s.run}/known_hosts root@ADDRESS")  # fmt: skip
                time.sleep(self.s.hold_on_failure)
        finally:
            try:
                self.destroy()
            except (StepFailed, OSError, subprocess.SubprocessError) as exc:
                self.say(f"vagrant destroy failed ({exc}); the namespace's cleanup kills the VMs")
            self.save()

    def box_add(self) -> None:
        if not self.s.box_file:
            return
        listed = self.vagrant("box", "list", "--machine-readable", show=False).stdout
        names = {line.split(",")[3] for line in listed.splitlines()
                 if line.count(",") >= 3 and line.split(",")[2] == "box-name"}  # fmt: skip
        for stale in sorted(n for n in names if n.startswith("overlayctl-bookworm-")):
            if stale != self.s.box:
                self.vagrant("box", "remove", "--force", "--all", stale)
        if self.s.box not in names:
            self.vagrant("box", "add", "--name", self.s.box, self.s.box_file, timeout=600)

    def guests(self) -> None:
        """Each VM's own kernel and hypervisor, over Vagrant's channel: real VMs, not containers."""
        config = self.s.run / "ssh-config"
        config.write_text(self.vagrant("ssh-config", show=False).stdout)
        host = os.uname().release
        for name in self.s.names:
            argv = ["ssh", "-F", str(config), "-o", "BatchMode=yes", name,
                    "uname -r; systemd-detect-virt || true"]  # fmt: skip
            out = self.sh(argv, 60, show=False).stdout
            kernel, virt = [*out.split(), "", ""][:2]
            self.result["guests"][name] = {"kernel": kernel, "virt": virt}
            self.say(
                f"  {name}: kernel {kernel} (this machine: {host}), systemd-detect-virt: {virt}"
            )
            wanted = "qemu" if self.s.driver == "qemu" else "kvm"
            if kernel == host or virt != wanted:
                raise StepFailed(f"{name} is not a {wanted} VM with its own kernel: {out!r}")
        if self.s.isolated:  # this process is in the namespace: its routes are the VMs'
            routes = self.sh(["ip", "-4", "route", "show"], 30).stdout
            if "default" in routes:
                raise StepFailed("the namespace has a default route: the VMs could reach out")

    def rhel_repositories(self) -> None:
        """README "RHEL family": EPEL and Docker's repository, added once by the operator."""
        repos = ("sudo dnf -y -q install epel-release dnf-plugins-core && sudo dnf config-manager "
                 "--add-repo https://download.docker.com/linux/centos/docker-ce.repo")  # fmt: skip
        for name in self.s.names:
            self.vagrant("ssh", name, "-c", repos, timeout=600)

    def from_vagrant(self) -> None:
        key = str(self.s.run / "id_ed25519")
        self.sh([self.s.overlayctl, "inventory", "from-vagrant", "--out", str(self.inventory),
                 "--name", self.s.run.name, "--key", key], 300)  # fmt: skip
        text = self.inventory.read_text()
        self.say("  " + text.replace("\n", "\n  "))
        if "10.0.2.15" in text:
            raise StepFailed("the NAT address is in the inventory")

    def init_again(self) -> None:
        out = self.overlayctl("init", timeout=600).stdout
        if f"init: 0 changes on {self.s.vms} hosts" not in out:
            raise StepFailed("the second init changed something")

    def image(self) -> list[str]:
        if self.s.isolated:  # the box carries the lab's busybox tar
            return ["--image", BUSYBOX_IMAGE_TAG, "--import-from", BUSYBOX_IMAGE]
        for line in self.inventory.read_text().splitlines():
            if line.strip().startswith("address:"):
                address = line.split()[-1]
                self.sh(["ssh", "-i", str(self.s.run / "id_ed25519"), "-o", "BatchMode=yes",
                         "-o", f"UserKnownHostsFile={self.s.run / 'known_hosts'}",
                         f"root@{address}", "docker", "pull", "-q", PULLED_IMAGE], 300)  # fmt: skip
        return ["--image", PULLED_IMAGE]

    def verify(self) -> None:
        doc = self.json_of("verify", *self.image(), timeout=600, check=False)
        pairs = doc.get("pairs", [])
        good = [p for p in pairs if p.get("ok") and p.get("mtu_ok")]
        self.say(f"  verify: {len(good)} of {len(pairs)} pairs ok (DF at the MTU too)")
        if not doc.get("ok") or len(good) != self.s.vms**2:
            raise StepFailed(f"verify: {json.dumps(doc.get('errors'))}")

    def status(self, wait: float = 0) -> None:
        """`status` healthy; after a reboot, WAIT seconds at most for the agents to be back."""
        until = time.monotonic() + wait
        while True:
            doc = self.json_of("status", timeout=300, check=False)
            if doc.get("ok") and doc.get("healthy"):
                break
            if time.monotonic() > until:
                raise StepFailed(f"status: {json.dumps(doc.get('errors'))}")
            time.sleep(10)
        for host in doc["hosts"]:
            self.say(f"  {host['name']}: agent ready {host['agent_ready']}, bip ok "
                     f"{host['bip_ok']}, mtu {host['mtu']}")  # fmt: skip

    def destroy(self) -> None:
        if self.up:
            self.up = False
            self.deadline = max(self.deadline, time.monotonic() + 300)  # cleanup gets its time
            self.vagrant("destroy", "-f", timeout=300)

    def consoles(self) -> None:
        for log in sorted((self.s.run / "console").glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-25:]
            self.say(f"-- last lines of {log.name}'s serial console:")
            for line in lines:
                self.say("  " + line)

    def save(self) -> None:
        (self.s.run / "page.json").write_text(json.dumps(self.result) + "\n")
