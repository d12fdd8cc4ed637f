"""Run on an etcd member with `python3 -c` (the etcd phase, a new cluster): wait until the
member's peer URL answers HTTP, i.e. etcd serves its peers; exit 0, or 1 with the last error
after SECONDS. Standard library only, Python 3.9.

    python3 -c "$(cat etcd_peer_serving.py)" PEER_URL SECONDS [CA CERT KEY]

Why: a new member asks each other member, at its start, whether it was bootstrapped already,
waiting up to a second for each. A member whose port is open but that is in that same check
does not answer: three members started at once each waited 2 s for the other two. Started one
after another, each once the previous one serves, every member's check is answered at once or
refused at once. The member's own peer certificate is the client certificate (the only CN
etcd admits on its peer port).
"""

from __future__ import annotations

import http.client
import ssl
import sys
import time
import urllib.parse


def serving(url: str, context: ssl.SSLContext | None) -> str:
    """'' when URL's /version answers, else why not."""
    parts = urllib.parse.urlsplit(url)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=1, context=context)
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=1)
    try:
        conn.request("GET", "/version")
        answer = conn.getresponse()
        answer.read()
        return "" if answer.status == 200 else f"HTTP {answer.status}"
    except (OSError, http.client.HTTPException) as exc:
        return str(exc) or type(exc).__name__
    finally:
        conn.close()


def main(url: str, seconds: str, *pki: str) -> int:
    context = None
    if pki:
        ca, cert, key = pki
        context = ssl.create_default_context(cafile=ca)
        context.check_hostname = False  # peer certificates name the member by address
        context.load_cert_chain(cert, key)
    deadline = time.monotonic() + float(seconds)
    last = "not tried"
    while time.monotonic() < deadline:
        last = serving(url, context)
        if not last:
            return 0
        time.sleep(0.05)
    print(last)
    return 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
