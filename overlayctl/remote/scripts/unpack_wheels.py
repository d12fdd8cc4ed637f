"""Run on a host by the new venv's python (install-agent.sh): unpack the wheels into its
site-packages and write the overlay-agent script, which names the final venv (this one is renamed
after). Standard library only, Python 3.9 (RHEL 9's); also run here by benchmarks/_lab.py, which
installs the agent the way init does.

    python unpack_wheels.py FINAL_VENV WHEEL...
"""

from __future__ import annotations

import pathlib
import sys
import sysconfig
import zipfile


def main(final: str, wheels: list[str]) -> None:
    site = pathlib.Path(sysconfig.get_paths()["purelib"])
    for wheel in wheels:
        if pathlib.Path(wheel).name.startswith("pip-"):
            continue
        with zipfile.ZipFile(wheel) as zf:
            if any(".data/" in name for name in zf.namelist()):
                sys.exit(wheel + ": wheels with .data/ folders are not supported here")
            zf.extractall(site)
    script = pathlib.Path(sys.prefix) / "bin" / "overlay-agent"
    script.write_text(
        "#!" + final + "/bin/python\nimport sys\nfrom agent.main import main\nsys.exit(main())\n"
    )
    script.chmod(0o755)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
