"""Helpers of the README-promise modules (tests/e2e/test_promises_*.py, issue #14): a lab with
inventories of its own, the commands' documents, and tables read back cell by cell."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from overlayctl.lab import labs, state
from overlayctl.lab.template import BUSYBOX_IMAGE, BUSYBOX_IMAGE_TAG
from tests.conftest import unique_name
from tests.labtools import cli, on

IMAGE = ("--image", BUSYBOX_IMAGE_TAG, "--import-from", BUSYBOX_IMAGE)
RTT = re.compile(r"^\d+\.\d\d ms$")  # a passing cell of verify's matrix


@contextmanager
def own_lab(hosts: int, prefix: str) -> Iterator[state.LabState]:
    """HOSTS booted full hosts on the usual LAN; removed afterwards, whatever happened."""
    lab = labs.up(unique_name(prefix), hosts, "192.168.255.0/24", progress=lambda _m: None)
    try:
        yield lab
    finally:
        labs.down(lab.name, progress=lambda _m: None)


def inventory(
    lab: state.LabState, stem: str, hosts: list[str], folder: Path | None = None, **cluster: Any
) -> Path:
    """An inventory STEM.yaml of the lab's HOSTS (in that order), its cluster keys updated
    with CLUSTER; written in the lab's folder (or FOLDER: a state folder of its own)."""
    doc = yaml.safe_load(lab.inventory.read_text())
    doc["cluster"].update(cluster)
    by_name = {h["name"]: h for h in doc["hosts"]}
    doc["hosts"] = [by_name[h] for h in hosts]
    path = (folder or lab.dir) / f"{stem}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run(lab: state.LabState, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    """`overlayctl ARGS -o json`: the process and its one JSON document."""
    result = cli(lab, *args, "-o", "json")
    try:
        return result, json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"not one JSON document: {result.stdout!r} {result.stderr!r}") from exc


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def sh(lab: state.LabState, host: str, command: str) -> str:
    """COMMAND on HOST; its stdout, after asserting it exited 0."""
    result = on(lab, host, command)
    assert result.returncode == 0, (host, command, result.stdout, result.stderr)
    return result.stdout


def table(text: str, first_header: str) -> list[dict[str, str]]:
    """The rows of the tabulate table in TEXT whose header starts with FIRST_HEADER, each as
    header -> cell, cells cut at the column spans of the dashes line (as a reader sees them)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_header))
    header, dashes = lines[start], lines[start + 1]
    spans = [m.span() for m in re.finditer(r"-+", dashes)]
    names = [header[a:b].strip() for a, b in spans]
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows.append({n: line[a:b].strip() for n, (a, b) in zip(names, spans, strict=True)})
    return rows


def matrix(text: str) -> dict[tuple[str, str], str]:
    """verify's table: (from, to) -> the cell (its rows are the hosts of its columns; the
    lines after it, `node2: FAILED ...` and the verdict, are not rows)."""
    rows = table(text, "from \\ to")
    hosts = set(rows[0]) - {"from \\ to"} if rows else set()
    return {
        (row["from \\ to"], dst): cell
        for row in rows
        if row["from \\ to"] in hosts
        for dst, cell in row.items()
        if dst != "from \\ to"
    }


def row(rows: list[dict[str, str]], key: str, value: str) -> dict[str, str]:
    (found,) = [r for r in rows if r[key] == value]
    return found


def leases(status_doc: dict) -> dict[str, str]:
    """host -> its lease's subnet (status -o json)."""
    return {lease["host"]: lease["subnet"] for lease in status_doc["leases"] if lease["host"]}


# Every file and symlink under /etc and /opt with its sha256 (symlinks with their target too),
# and docker's vendor unit: what `reset` must put back as it was before `init`.
_SNAPSHOT = (
    "find /etc /opt \\( -type f -o -type l \\) -print0 | sort -z | xargs -0 sha256sum; "
    "find /etc /opt -type l -printf '%p -> %l\\n' | sort; "
    "sha256sum /lib/systemd/system/docker.service"
)
# What stays changed on purpose: docker is left enabled and running on its own bridge (it
# was only installed before init), which enables it and makes its key.
_DOCKER_ENABLED = re.compile(
    r"/etc/docker/|/etc/rc\d\.d/[KS]\d\ddocker|/multi-user\.target\.wants/docker\.service"
)


def snapshot(lab: state.LabState, host: str) -> list[str]:
    lines = sh(lab, host, _SNAPSHOT).splitlines()
    return [line for line in lines if not _DOCKER_ENABLED.search(line)]
