"""The agent's own wheel, built from this installation at every run, without any network.

It is not in the lock: it is made here, from the agent package installed with overlayctl (whose
own files pip checked against overlayctl's wheel RECORD when it was installed), and the build is
reproducible: sorted entries, fixed timestamps, so the same sources give the same bytes. Its
sha256 is taken from the bytes as built, in memory, before the file is written: the host checks
the upload against that, and its RECORD file by file (overlayctl/remote/scripts/unpack_wheels.py).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import zipfile
from pathlib import Path

import agent
from overlayctl.wheelhouse.lock import EXTRAS

AGENT_DIST = "overlay_agent"
_FIXED_DATE = (2020, 1, 1, 0, 0, 0)  # reproducible zip entries


def _metadata(version: str) -> bytes:
    """Dependencies only as extras: a host gets the gRPC stack or PyYAML only when its agent
    options need them (lock.EXTRAS); the wheelhouse copied next to it decides the versions."""
    lines = [
        "Metadata-Version: 2.1", "Name: overlay-agent", f"Version: {version}",
        "Summary: overlay-agent (from overlayctl)", "Requires-Python: >=3.9",
    ]  # fmt: skip
    for extra, (_option, requirements) in sorted(EXTRAS.items()):
        lines.append(f"Provides-Extra: {extra}")
        lines += [f'Requires-Dist: {r}; extra == "{extra}"' for r in requirements]
    return ("\n".join(lines) + "\n").encode()


def _record(files: dict[str, bytes], dist_info: str) -> bytes:
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        writer.writerow([name, f"sha256={digest}", len(data)])
    writer.writerow([f"{dist_info}/RECORD", "", ""])
    return record.getvalue().encode()


def agent_wheel_bytes() -> tuple[str, bytes]:
    """(file name, content) of our agent package as a py3-none-any wheel."""
    version = agent.__version__
    dist_info = f"{AGENT_DIST}-{version}.dist-info"
    files: dict[str, bytes] = {}
    root = Path(agent.__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        files[f"agent/{path.relative_to(root).as_posix()}"] = path.read_bytes()
    files[f"{dist_info}/METADATA"] = _metadata(version)
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: overlayctl\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{dist_info}/entry_points.txt"] = b"[console_scripts]\noverlay-agent = agent.main:main\n"
    files[f"{dist_info}/RECORD"] = _record(files, dist_info)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, _FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return f"{AGENT_DIST}-{version}-py3-none-any.whl", out.getvalue()


def build_agent_wheel(out_dir: Path) -> tuple[Path, str]:
    """Write the agent's wheel into OUT_DIR: (its path, the sha256 of the bytes as built)."""
    name, data = agent_wheel_bytes()
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / name
    tmp = wheel.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(wheel)
    return wheel, hashlib.sha256(data).hexdigest()
