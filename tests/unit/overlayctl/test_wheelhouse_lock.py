"""The agent's supply chain (issue #17 item 5): wheels are fetched with --require-hashes against
a lock, checked against that lock (never against hashes computed from the cache) before they are
used, a target without a lock stops with one line naming the host, and only hosts whose agent
uses the gRPC transport get the gRPC stack."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from overlayctl.cli import main
from overlayctl.errors import EnvironmentProblem
from overlayctl.wheelhouse import Bundles, cache, extras_for, lock

FAKE = ("3.99", "x86_64")  # a target no lock ships for: its lock lives beside the cache


def fake_wheel(folder: Path, name: str, content: bytes) -> lock.Pinned:
    path = folder / f"{name}-1.0-py3-none-any.whl"
    path.write_bytes(content)
    extra = "grpc" if name in ("grpcio", "protobuf") else "yaml"
    return lock.Pinned(path.name, name, "1.0", hashlib.sha256(content).hexdigest(), extra)


@pytest.fixture
def cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache holding a local lock for FAKE and its complete folder of wheels."""
    monkeypatch.setenv("OVERLAYCTL_WHEELHOUSE", str(tmp_path / "cache"))
    staging = tmp_path / "staging"
    staging.mkdir()
    names = ("attrs", "grpcio", "protobuf", "pyyaml")  # attrs: a yaml-extra name before grpc's
    wheels = [fake_wheel(staging, n, n.encode() * 100) for n in names]
    lock.local_locks().mkdir(parents=True)
    (lock.local_locks() / lock.lock_name(*FAKE)).write_text(lock.to_json(*FAKE, wheels))
    folder = cache.deps_dir(*FAKE)
    folder.mkdir(parents=True)
    for w in wheels:
        (folder / w.file).write_bytes((staging / w.file).read_bytes())
    (folder / "complete").write_text("".join(f"{w.file}\n" for w in wheels))
    return folder


def test_shipped_locks_cover_the_lab_and_rhel9_targets() -> None:
    for python in ("3.11", "3.9"):
        found = lock.find_lock(python, "x86_64")
        assert found is not None and found.shipped, python
        names = {w.name.lower().replace("_", "-") for w in found.wheels}
        assert {"grpcio", "protobuf", "etcd-sdk-python", "pyyaml"} <= names
        assert all(w.extra == "grpc" for w in found.wheels if w.name in ("grpcio", "protobuf"))


def test_a_changed_byte_is_refused_by_the_lock_naming_the_wheel(cached: Path, tmp_path) -> None:
    bundles = Bundles(tmp_path / "out")
    assert len(bundles.get(*FAKE).wheels) == 1  # http agent: its own wheel only
    (grpcio,) = cached.glob("grpcio-*.whl")
    data = bytearray(grpcio.read_bytes())
    data[5] ^= 1
    grpcio.write_bytes(bytes(data))
    # Not used by an http agent, still in this host's wheelhouse: checked all the same.
    with pytest.raises(EnvironmentProblem, match=rf"{grpcio.name} does not match its sha256"):
        Bundles(tmp_path / "out").check({"node1": FAKE})


def test_only_grpc_agents_get_the_grpc_stack(cached: Path, tmp_path: Path) -> None:
    assert extras_for(("--etcd-transport=grpc",)) == {"grpc"}
    assert extras_for(("--etcd_transport=grpc", "--ip-masq")) == {"grpc"}
    assert extras_for(("--etcd-transport=http",)) == frozenset()
    assert extras_for(("--etcd-transport=grpc", "--etcd-transport=http")) == frozenset()
    http = Bundles(tmp_path / "a").get(*FAKE)
    grpc = Bundles(tmp_path / "b", ("--etcd-transport=grpc",)).get(*FAKE)
    assert [p.name.split("-")[0] for p in http.wheels] == ["overlay_agent"]
    assert sorted(p.name.split("-")[0] for p in grpc.wheels) == [
        "grpcio", "overlay_agent", "protobuf",
    ]  # fmt: skip
    assert http.digest != grpc.digest  # switching the transport reinstalls
    # The sums the host checks come from the lock (the agent's: from its build), by name.
    pinned = json.loads((lock.local_locks() / lock.lock_name(*FAKE)).read_text())["wheels"]
    assert {w["file"]: w["sha256"] for w in pinned if w["extra"] == "grpc"}.items() <= dict(
        grpc.sha256
    ).items()


def test_a_target_without_a_lock_names_the_host_and_the_way_on(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OVERLAYCTL_WHEELHOUSE", str(tmp_path))
    with pytest.raises(EnvironmentProblem) as caught:
        Bundles(tmp_path / "out").check({"node7": ("3.12", "aarch64")})
    message = str(caught.value)
    assert message.startswith("node7: no pinned lock") and "CPython 3.12 on aarch64" in message
    assert "--unpinned-python" in message and "\n" not in message


def test_download_uses_require_hashes_and_refuses_what_pip_brings_wrong(
    cached: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wanted = {p.name: p.read_bytes() for p in cached.glob("*.whl")}
    for p in cached.iterdir():
        p.unlink()
    calls: list[list[str]] = []

    def pip(argv: list[str], **_kw) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        requirements = Path(argv[argv.index("-r") + 1]).read_text()
        calls.append(requirements.splitlines())
        dest = Path(argv[argv.index("-d") + 1])
        for name, data in wanted.items():
            (dest / name).write_bytes(data if "pyyaml" not in name else b"another pyyaml")
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(cache.subprocess, "run", pip)
    with pytest.raises(EnvironmentProblem, match=r"pyyaml-1\.0-py3-none-any\.whl does not match"):
        cache.download_dependencies(*FAKE, progress=lambda _l: None)
    argv, requirements = calls
    assert "--require-hashes" in argv and "--no-deps" in argv
    assert len(requirements) == 4 and all("--hash=sha256:" in r for r in requirements)
    assert not (cached / "complete").exists()  # never a cache that counts


def test_cli_without_a_lock_stops_with_one_line(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OVERLAYCTL_WHEELHOUSE", str(tmp_path))
    result = CliRunner().invoke(main, ["wheelhouse", "--python", "3.12", "--arch", "x86_64"])
    assert result.exit_code == 3, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "--unpinned-python" in lines[0], result.output
    again = CliRunner().invoke(main, ["wheelhouse", "--python", "3.11", "--unpinned-python"])
    assert again.exit_code == 4 and "already has a lock" in again.output, again.output
    assert not any(tmp_path.iterdir())  # nothing written


def test_a_new_lock_takes_same_bytes_from_the_cache_without_network(
    cached: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock whose wheels another cache folder already holds (same sha256) fills its own folder
    offline, and `complete` lists them as the folder's sorted listing (what `wheelhouse -o json`
    prints)."""
    old = cached.with_name("py3.99-x86_64-old")
    cached.rename(old)

    def no_pip(*_a, **_kw):
        raise AssertionError("pip must not run: every wheel is in the cache")

    monkeypatch.setattr(cache.subprocess, "run", no_pip)
    folder = cache.download_dependencies(*FAKE, progress=lambda _l: None)
    listed = sorted(p.name for p in folder.glob("*.whl"))
    assert folder == cached and (folder / "complete").read_text().split() == listed
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert cache.download_dependencies(*FAKE, progress=lambda _l: None) == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps


def test_unpinned_python_pins_once_beside_the_cache_then_fetches_by_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--unpinned-python: resolve without hashes (the only time), write the lock beside the
    cache, then download that lock's wheels with --require-hashes like any other target."""
    monkeypatch.setenv("OVERLAYCTL_WHEELHOUSE", str(tmp_path))
    calls: list[list[str]] = []

    def pip(argv: list[str], **_kw) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        dest = Path(argv[argv.index("-d") + 1])
        if "-r" in argv:
            wanted = Path(argv[argv.index("-r") + 1]).read_text()
        else:  # the requirements follow the last platform
            wanted = " ".join(argv[argv.index(f"manylinux2014_{FAKE[1]}") + 1 :])
        for dist in ("grpcio", "protobuf", "etcd_sdk_python", "pyyaml"):
            if dist in wanted.replace("-", "_"):
                (dest / f"{dist}-9.0-py3-none-any.whl").write_bytes(dist.encode())
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(cache.subprocess, "run", pip)
    result = CliRunner().invoke(main, ["wheelhouse", "--python", "3.12", "--arch", "x86_64",
                                       "--unpinned-python", "-o", "json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    written = lock.find_lock("3.12", "x86_64")
    assert written is not None and not written.shipped
    assert written.source == tmp_path / "locks" / "cp312-x86_64.json"
    assert {w.file: w.extra for w in written.wheels} == {
        "etcd_sdk_python-9.0-py3-none-any.whl": "grpc", "grpcio-9.0-py3-none-any.whl": "grpc",
        "protobuf-9.0-py3-none-any.whl": "grpc", "pyyaml-9.0-py3-none-any.whl": "yaml",
    }  # fmt: skip
    *resolving, fetching = calls  # one resolve per extra, then the fetch by hash
    assert len(resolving) == 2
    assert all("--require-hashes" not in c and "==" not in " ".join(c) for c in resolving)
    assert "--require-hashes" in fetching
    assert json.loads(result.stdout)["wheels"] == sorted(w.file for w in written.wheels)


def test_lock_pins_this_installations_versions_or_says_it_took_newer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`wheelhouse lock` asks for the versions installed here; where the target's Python has
    none of them it says so and takes the newest (the maintainer reviews the lock's diff)."""
    asked: list[str] = []

    def pip(argv: list[str], **_kw) -> subprocess.CompletedProcess[str]:
        wanted = argv[argv.index("manylinux2014_x86_64") + 1 :]
        asked.append(" ".join(wanted))
        if any("==" in w for w in wanted):
            return subprocess.CompletedProcess(argv, 1, "", "ERROR: No matching distribution")
        dest = Path(argv[argv.index("-d") + 1])
        for dist in wanted:
            (dest / f"{dist.replace('-', '_')}-1.0-py3-none-any.whl").write_bytes(dist.encode())
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(cache.subprocess, "run", pip)
    out = tmp_path / "lock.json"
    result = CliRunner().invoke(main, ["wheelhouse", "lock", "--python", "3.9", "--to", str(out)])
    assert result.exit_code == 0, result.output
    assert "not all available for Python 3.9" in result.output
    assert [a for a in asked if "==" in a] and asked[-1] == "pyyaml"
    written = lock.read_lock(out, shipped=True)
    assert {w.name: w.extra for w in written.wheels} == {
        "etcd_sdk_python": "grpc", "protobuf": "grpc", "grpcio": "grpc", "pyyaml": "yaml",
    }  # fmt: skip
