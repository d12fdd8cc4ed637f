"""Run on a host with `python3 -c` (the agent phase): poll the agent's /readyz until it answers
200, then print the answer; else print the last answer and exit 1. Standard library only,
Python 3.9.

    python3 -c "$(cat agent_ready.py)" PORT SECONDS
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request


def main(port: str, seconds: str) -> int:
    url = f"http://127.0.0.1:{port}/readyz"
    deadline = time.monotonic() + float(seconds)
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                print(answer.read().decode())
                return 0
        except urllib.error.HTTPError as exc:
            last = exc.read().decode()
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)  # a restart returns once the agent is ready: rarely needed
    print(last)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
