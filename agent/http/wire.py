"""The little HTTP/1.1 the agent speaks, on plain sockets: a client for etcd's JSON gateway and
the framing its health server needs.

What is here: request and status lines, headers (bounded in count and size), bodies by
Content-Length or chunked transfer coding (etcd's streams), keep-alive on the client side.

Why not http.client / http.server, measured (2026-12-02, this project's 2-core machine; one
agent as `init` installs it, Debian's Python 3.11 in a venv; exec to sd_notify READY=1 against a
local etcd, then VmRSS; medians of 10 runs, interleaved):

    hand-written (this module)            145 ms to READY, 16.7 MB RSS, 0.115 CPU-s
    + http.client and http.server         166 ms to READY, 22.6 MB RSS, 0.140 CPU-s
      (http.client alone: 164 ms, 21.9 MB; they pull in the email package)

The 21 ms to READY are not something a user sees; the memory is: +5.9 MB (+35 %) resident in
every host's agent for as long as it runs, for a handful of JSON requests and three GET
endpoints. Kept for that, and for the 100-agents-at-once start-up (benchmarks/scale.py: +0.025
CPU-s per agent). Since it parses what a TLS peer and a listening port send, it is fuzzed
(tests/unit/agent/test_wire_fuzz.py): any bytes raise only :class:`HttpError`, memory bounded.
"""

from __future__ import annotations

import socket
from typing import Any

MAX_LINE = 16 * 1024
MAX_HEADERS = 100
MAX_BODY = 64 * 1024 * 1024  # a full etcd range reply stays far below this


_HEX = frozenset(b"0123456789abcdefABCDEF")


def _is_decimal(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes "\xb2" (superscript two), which int() refuses."""
    return text.isascii() and text.isdigit()


class HttpError(OSError):
    """The peer broke the protocol or the connection (an OSError, like socket errors).

    Also for every malformed number (a chunk size of ``-1``, ``-2``, ``0x1f`` or with a
    non-ASCII digit, a Content-Length that is not plain decimal) and for a body past MAX_BODY
    in any framing (sized, chunked, until close, read whole or line by line)."""


class ClosedWithoutAnswer(HttpError):
    """The server closed the connection before answering (e.g. an idle keep-alive timed out)."""


def read_line(reader: Any) -> bytes:
    """One CRLF-terminated line from a buffered reader, bounded; b"" at EOF."""
    line = reader.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise HttpError("HTTP line too long")
    return line


def read_head(reader: Any) -> tuple[str, dict[str, str]] | None:
    """The start line and the headers (names lower-cased); None at a clean EOF."""
    first = read_line(reader)
    if not first:
        return None
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = read_line(reader)
        if not line:
            raise HttpError("connection closed inside the HTTP header")
        if line in (b"\r\n", b"\n"):
            return first.decode("latin-1").strip(), headers
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise HttpError(f"malformed HTTP header line {line[:40]!r}")
        headers[name.strip().lower()] = value.strip()
    raise HttpError("too many HTTP header lines")


class Response:
    """A response's status and headers; the body is read with :meth:`read` or
    :meth:`readline` (chunked or sized, transparently)."""

    def __init__(self, reader: Any, status: int, headers: dict[str, str]) -> None:
        self._reader = reader
        self.status = status
        self.headers = headers
        self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length")
        if length is not None and not self.chunked and not _is_decimal(length):
            raise HttpError(f"bad Content-Length {length[:20]!r}")  # "-1" would read to EOF
        self._left = int(length) if length is not None and not self.chunked else None
        if self._left is not None and self._left > MAX_BODY:
            raise HttpError(f"HTTP body of {self._left} bytes is too large")
        self._chunk_left = 0
        self._buffer = b""
        self.done = self._left == 0
        self.will_close = headers.get("connection", "").lower() == "close" or (
            self._left is None and not self.chunked
        )

    def _next_chunk(self) -> bytes:
        """The rest of the body's next piece; b"" at its end."""
        if self.done:
            return b""
        if not self.chunked:
            if self._left is None:  # until the server closes
                data = self._reader.read1(65536)
                self.done = not data
                return data
            data = self._reader.read(min(self._left, 65536))
            if not data:
                raise HttpError("connection closed inside the HTTP body")
            self._left -= len(data)
            self.done = self._left == 0
            return data
        if self._chunk_left == 0:
            size_line = read_line(self._reader)
            digits = size_line.split(b";", 1)[0].strip()
            if not digits or not _HEX.issuperset(digits):  # int(x, 16) also takes "-1", "0x1f"
                raise HttpError(f"bad chunk size {size_line[:20]!r}")
            size = int(digits, 16)
            if size > MAX_BODY:
                raise HttpError(f"HTTP chunk of {size} bytes is too large")
            if size == 0:
                while read_line(self._reader) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                self.done = True
                return b""
            self._chunk_left = size
        data = self._reader.read(min(self._chunk_left, 65536))
        if not data:
            raise HttpError("connection closed inside an HTTP chunk")
        self._chunk_left -= len(data)
        if self._chunk_left == 0:
            read_line(self._reader)  # the CRLF after the chunk
        return data

    def read(self) -> bytes:
        """The whole (rest of the) body."""
        parts = [self._buffer]
        self._buffer = b""
        size = len(parts[0])
        while not self.done:
            data = self._next_chunk()
            size += len(data)
            if size > MAX_BODY:
                raise HttpError("HTTP body too large")
            parts.append(data)
        return b"".join(parts)

    def readline(self) -> bytes:
        """The body's next line (with its newline); b"" at the end of the body. A line grows
        in one bytearray (bytes += would copy it whole for every piece: quadratic)."""
        buffer = self._buffer
        if b"\n" not in buffer and not self.done:
            grown = bytearray(buffer)
            while not self.done:
                piece = self._next_chunk()
                grown += piece
                if len(grown) > MAX_BODY:
                    raise HttpError("HTTP stream line too long")
                if b"\n" in piece:
                    break
            buffer = bytes(grown)
        line, sep, rest = buffer.partition(b"\n")
        self._buffer = rest
        return line + sep


def read_response(reader: Any) -> Response:
    """A response's status line and headers from READER; its body is read from the Response."""
    head = read_head(reader)
    if head is None:
        raise ClosedWithoutAnswer("the server closed the connection without an answer")
    status_line, reply_headers = head
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not _is_decimal(parts[1]):
        raise HttpError(f"not an HTTP status line: {status_line[:60]!r}")
    return Response(reader, int(parts[1]), reply_headers)


class Connection:
    """One client connection (TLS if ``context``); requests go one after the other."""

    def __init__(self, host: str, port: int, timeout: float | None, context: Any = None) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.context = context
        self.sock: socket.socket | None = None
        self._reader: Any = None

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.context is not None:
            try:
                sock = self.context.wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        self.sock = sock
        self._reader = sock.makefile("rb")
        return sock

    def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Response:
        """Send a request with BODY and read the response's head."""
        sock = self.sock or self._connect()
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        return read_response(self._reader)

    def close(self) -> None:
        sock, self.sock = self.sock, None
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        if sock is not None:
            sock.close()
