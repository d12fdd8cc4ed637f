"""Run on a host by the new venv's python (install-agent.sh): check every wheel against its
RECORD, then unpack them into its site-packages and write the overlay-agent script, which names
the final venv (this one is renamed after). Standard library only, Python 3.9 (RHEL 9's); also
run here by benchmarks/_lab.py, which installs the agent the way init does.

    python unpack_wheels.py FINAL_VENV WHEEL...

Every wheel is checked before anything is unpacked: each file it holds must be listed in its
RECORD with that file's sha256 and size, each listed file must be there, and no name may leave
site-packages. One that fails ends the install with a line naming the wheel and the file (the
Debian hosts' Python has no pip to do this with `--require-hashes`; the upload as a whole was
already checked against the lock's sha256).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import pathlib
import sys
import sysconfig
import zipfile


def _record(zf: zipfile.ZipFile, wheel: str) -> dict[str, tuple[str, str]]:
    """name -> (hash, size) from the wheel's .dist-info/RECORD."""
    records = [n for n in zf.namelist() if n.endswith(".dist-info/RECORD") and n.count("/") == 1]
    if len(records) != 1:
        raise ValueError(wheel + ": no single .dist-info/RECORD")
    rows = csv.reader(io.StringIO(zf.read(records[0]).decode("utf-8")))
    return {row[0]: (row[1], row[2]) for row in rows if row}


def check(wheel: str) -> None:
    """Raise ValueError unless every file of WHEEL matches its RECORD line, and back."""
    with zipfile.ZipFile(wheel) as zf:
        listed = _record(zf, wheel)
        names = [i.filename for i in zf.infolist() if not i.is_dir()]
        for name in names:
            if name.startswith("/") or ".." in name.split("/") or ".data/" in name:
                raise ValueError(wheel + ": unsafe or unsupported path " + name)
            if name.endswith(("/RECORD", "/RECORD.jws", "/RECORD.p7s")) and name.count("/") == 1:
                continue
            if name not in listed:
                raise ValueError(wheel + ": " + name + " is not in its RECORD")
            algo, _, want = listed[name][0].partition("=")
            if algo != "sha256":
                raise ValueError(wheel + ": " + name + " has no sha256 in its RECORD")
            data = zf.read(name)
            got = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            if got != want or (listed[name][1] and int(listed[name][1]) != len(data)):
                raise ValueError(wheel + ": " + name + " does not match its RECORD hash")
        missing = sorted(set(listed) - set(names))
        if missing:
            raise ValueError(wheel + ": " + missing[0] + " is in its RECORD but not in the wheel")


def main(final: str, wheels: list[str]) -> None:
    for wheel in wheels:
        try:
            check(wheel)
        except (ValueError, zipfile.BadZipFile, UnicodeDecodeError, IndexError) as exc:
            sys.exit("refused: " + str(exc))
    site = pathlib.Path(sysconfig.get_paths()["purelib"])
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(site)
    script = pathlib.Path(sys.prefix) / "bin" / "overlay-agent"
    script.write_text(
        "#!" + final + "/bin/python\nimport sys\nfrom agent.main import main\nsys.exit(main())\n"
    )
    script.chmod(0o755)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
