"""Debian packages the lab template lacks, put on lab hosts for one test module: the hosts have
no network to a mirror, so this machine's apt fetches what PACKAGES need on top of the
template's installed set (its dpkg status, not this machine's), from the mirror its own sources
name, into a cache outside the checkout; the module copies them into each host and runs
`dpkg -i` there. A few MB, fetched once per machine; later runs find them in the cache.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from overlayctl.lab import state
from tests.labtools import on

CACHE = Path(os.environ.get("OVERLAYCTL_DEB_CACHE", "/var/cache/overlayctl/debs"))
ON_HOST = "/var/cache/overlayctl-lab-debs"  # inside each host, removed after the install
_URI = re.compile(r"^'(?P<uri>[^']+)' (?P<file>\S+\.deb) ")


def _apt(status: Path, *args: str, archives: Path = CACHE) -> subprocess.CompletedProcess[str]:
    """apt-get against the template's dpkg STATUS, downloading into ARCHIVES."""
    argv = ["apt-get", "-q", "-y", "--no-install-recommends", "-o", f"Dir::State::status={status}",
            "-o", f"Dir::Cache::archives={archives}", *args]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


def fetch(rootfs: Path, packages: tuple[str, ...]) -> list[Path]:
    """The .debs PACKAGES need on a host made from ROOTFS, in CACHE. Package lists too old for
    the mirror (a 404) get one `apt-get update`; a mirror that cannot be reached skips the
    test, saying so."""
    (CACHE / "partial").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lab-debs-") as tmp:
        status = Path(tmp) / "status"
        shutil.copy(rootfs / "var/lib/dpkg/status", status)  # apt may not touch the template
        # Listed against an empty archive folder: apt leaves out what its archives already
        # hold, so against CACHE a second run on this machine would list nothing.
        empty = Path(tmp) / "archives"
        (empty / "partial").mkdir(parents=True)
        for attempt in range(2):
            listed = _apt(status, "--print-uris", "install", *packages, archives=empty)
            assert listed.returncode == 0, listed.stdout + listed.stderr
            files = [CACHE / m["file"] for m in map(_URI.match, listed.stdout.splitlines()) if m]
            assert files, f"apt lists nothing to install for {packages}: {listed.stdout}"
            if all(f.exists() for f in files):
                return files
            got = _apt(status, "--download-only", "install", *packages)
            if got.returncode == 0 and all(f.exists() for f in files):
                return files
            if attempt == 0:
                subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=300,
                               check=False)  # fmt: skip
    reason = (got.stderr.strip().splitlines() or ["no error"])[-1]
    pytest.skip(f"cannot fetch {' '.join(packages)} for the lab hosts from apt's mirror: {reason}")


def install(lab: state.LabState, hosts: list[str], debs: list[Path]) -> None:
    """DEBS copied into each host and installed there with dpkg, every host at once."""

    def one(host: str) -> None:
        folder = Path(lab.host(host).root) / ON_HOST.lstrip("/")
        folder.mkdir(parents=True, exist_ok=True)
        for deb in debs:
            shutil.copy(deb, folder / deb.name)
        done = on(lab, host, f"dpkg -i {ON_HOST}/*.deb >/tmp/lab-debs.log 2>&1; rc=$?; "
                             f"rm -rf {ON_HOST}; [ $rc = 0 ] || tail -20 /tmp/lab-debs.log; "
                             "exit $rc")  # fmt: skip
        assert done.returncode == 0, (host, done.stdout, done.stderr)

    with ThreadPoolExecutor(len(hosts)) as pool:
        list(pool.map(one, hosts))
