"""Fuzzing the agent's hand-written parsers (hypothesis): whatever bytes arrive, they raise
nothing but their module's own error, and their memory stays bounded.

- agent/http/wire.py: HTTP/1.1 framing as the etcd gateway client reads it (status line,
  headers, sized, chunked and until-close bodies, read whole or line by line) and as the health
  server reads a request head;
- agent/net/rtnl.py and agent/net/netlink.py: rtnetlink reply streams, attributes and the
  link, address, route and neighbour messages decoded from them.

The inputs are random bytes and, more usefully, near-valid messages with random fields, so the
search reaches the states behind the first line.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import tracemalloc
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.http import wire
from agent.http.wire import HttpError, read_head, read_response
from agent.net import rtnl
from agent.net.netlink import Netlink, NetlinkError

# FUZZ_EXAMPLES=20000 for a longer search; no example database is written into the checkout.
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "400")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# Bounded memory: parsing N bytes of input may not allocate much more than N (plus a constant
# for Python's own objects); a parser that trusted a length field would blow far past this.
SLACK = 1 << 20


def bounded(parse: Callable[[bytes], object], data: bytes, exceptions: type[Exception]) -> None:
    """Run PARSE on DATA: only EXCEPTIONS may escape, and peak memory stays bounded."""
    tracemalloc.start()
    try:
        parse(data)
    except exceptions:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak <= 4 * len(data) + SLACK


# -- HTTP ---------------------------------------------------------------------------------------

# Field values an HTTP peer could send: numbers in every spelling str/int would accept, and
# any latin-1 text (the framing decodes heads as latin-1).
_NUMBER = st.one_of(
    st.sampled_from(["0", "5", "200", "-1", "+7", "1_0", "0x1f", " 9", "ff", "\xb2", "\xb9", ""]),
    st.integers(min_value=0, max_value=1 << 70).map(str),
    st.text(st.characters(max_codepoint=255), max_size=5),
)
_EOL = st.sampled_from([b"\r\n", b"\n"])


def _latin1(text: str) -> bytes:
    return text.encode("latin-1")


@st.composite
def _http_message(draw: st.DrawFn) -> bytes:
    """A near-valid HTTP/1.1 reply or request, cut short anywhere."""
    eol = draw(_EOL)
    start = draw(st.sampled_from([b"HTTP/1.1 ", b"HTTP/1.0 ", b"GET / HTTP/1.1", b"HTTX "]))
    out = [start + _latin1(draw(_NUMBER)) + b" OK" + eol]
    names = st.sampled_from(["Content-Length", "Transfer-Encoding", "Connection", "X", ""])
    values = st.one_of(_NUMBER, st.sampled_from(["chunked", "close", "gzip, chunked"]))
    for name, value in draw(st.lists(st.tuples(names, values), max_size=4)):
        out.append(_latin1(f"{name}: {value}") + eol)
    out.append(eol)
    for size, data in draw(st.lists(st.tuples(_NUMBER, st.binary(max_size=40)), max_size=4)):
        out.append(_latin1(size) + draw(st.sampled_from([b"", b";x=1"])) + eol + data + eol)
    out.append(draw(st.binary(max_size=40)))
    message = b"".join(out)
    return message[: draw(st.integers(min_value=0, max_value=len(message)))]


_HTTP = st.one_of(st.binary(max_size=600), _http_message())


def _read_client(data: bytes) -> None:
    """What the gateway client does with a reply: the head, then the body whole or by lines."""
    resp = read_response(io.BufferedReader(io.BytesIO(data)))
    while resp.readline():
        pass
    resp.read()


def _read_server(data: bytes) -> None:
    """What the health server reads of a request."""
    read_head(io.BufferedReader(io.BytesIO(data)))


@FUZZ
@given(_HTTP)
def test_http_reply_framing_raises_only_http_error(data: bytes) -> None:
    bounded(_read_client, data, HttpError)


@FUZZ
@given(_HTTP)
def test_http_request_head_raises_only_http_error(data: bytes) -> None:
    bounded(_read_server, data, HttpError)


@FUZZ
@given(st.integers(min_value=wire.MAX_BODY + 1, max_value=1 << 62), st.booleans())
def test_a_huge_declared_body_is_refused_not_allocated(size: int, chunked: bool) -> None:
    head = (
        b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % size
        if chunked
        else (b"Content-Length: %d\r\n\r\n" % size)
    )
    bounded(_read_client, b"HTTP/1.1 200 OK\r\n" + head + b"x" * 1000, HttpError)


@FUZZ
@given(st.binary(max_size=12) | _NUMBER.map(_latin1), st.binary(max_size=30))
def test_a_chunk_size_is_ascii_hex_or_the_module_error(size: bytes, data: bytes) -> None:
    """Issue 17 item 10: whatever the size line holds, the body is read only when it is plain
    non-negative ASCII hex within the cap; anything else raises HttpError (never ValueError)."""
    reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\n" + data
    try:
        _read_client(reply)
    except HttpError:
        return
    digits = size.split(b";", 1)[0].strip()
    assert digits and all(c in b"0123456789abcdefABCDEF" for c in digits)
    assert int(digits, 16) <= wire.MAX_BODY


# -- rtnetlink ----------------------------------------------------------------------------------

_ATTR_TYPES = st.integers(min_value=0, max_value=20) | st.sampled_from([0x8012, 0x4003, 0xFFFF])


# Payloads the decoders look at twice: interface kinds, u8/be16/u32/IPv4/MAC-sized values.
_VALUE = st.one_of(
    st.sampled_from([b"vxlan\0", b"", b"\x01", b"\x12\xb5", b"\x01\0\0\0", b"\n\x05\x02\0"]),
    st.binary(min_size=4, max_size=4),
    st.binary(max_size=12),
)


@st.composite
def _attributes(draw: st.DrawFn, depth: int = 2) -> bytes:
    """rtattrs with random types and payloads, some nested, some with lying length fields."""
    out = b""
    for kind in draw(st.lists(_ATTR_TYPES, max_size=6)):
        payload = draw(_attributes(depth - 1)) if depth and draw(st.booleans()) else draw(_VALUE)
        attr = rtnl.attr(kind, payload)
        if draw(st.integers(0, 7)) == 0:  # a length field that lies
            attr = struct.pack("=H", draw(st.integers(0, 0xFFFF))) + attr[2:]
        out += attr
    return out


_FAMILY = st.sampled_from([2, 2, 7, 0]) | st.integers(0, 255)  # AF_INET, AF_BRIDGE, AF_UNSPEC
_INDEX = st.sampled_from([0, 1, -1])
_PREFIX = st.integers(0, 40) | st.integers(0, 255)
_HEADERS = (
    st.tuples(_FAMILY, st.integers(0, 0xFFFF), _INDEX, st.integers(0, 0xFFFFFFFF), st.just(0)).map(
        lambda f: rtnl.IFINFOMSG.pack(*f)
    ),
    st.tuples(_FAMILY, _PREFIX, st.integers(0, 255), st.integers(0, 255), _INDEX).map(
        lambda f: rtnl.IFADDRMSG.pack(*f)
    ),
    st.tuples(
        _FAMILY,
        _PREFIX,
        st.just(0),
        st.just(0),
        st.sampled_from([254, 0, 255]),
        st.just(3),
        st.just(0),
        st.just(1),
        st.sampled_from([0, 4]),
    ).map(lambda f: rtnl.RTMSG.pack(*f)),
    st.tuples(_FAMILY, _INDEX, st.sampled_from([0x80, 0]), st.sampled_from([0, 2]), st.just(0)).map(
        lambda f: rtnl.NDMSG.pack(*f)
    ),
)


_KINDS = (rtnl.RTM_NEWLINK, rtnl.RTM_NEWADDR, rtnl.RTM_NEWROUTE, rtnl.RTM_NEWNEIGH)


@st.composite
def _rtnl_message(draw: st.DrawFn) -> tuple[int, bytes]:
    """(type, payload): mostly a header that fits the type, then attributes, cut anywhere."""
    which = draw(st.integers(0, 3))
    kind = _KINDS[which] if draw(st.integers(0, 4)) else _KINDS[draw(st.integers(0, 3))]
    payload = draw(_HEADERS[which]) + draw(_attributes())
    if draw(st.integers(0, 3)) == 0:
        payload = payload[: draw(st.integers(min_value=0, max_value=len(payload)))]
    return kind, payload


@st.composite
def _vxlan_link(draw: st.DrawFn) -> tuple[int, bytes]:
    """A link message whose IFLA_LINKINFO says vxlan: its IFLA_VXLAN_* values of any size."""
    data = b"".join(
        rtnl.attr(kind, draw(_VALUE)) for kind in draw(st.lists(st.sampled_from([1, 3, 4, 7, 15])))
    )
    info = rtnl.attr(1, b"vxlan\0") + rtnl.attr(2, data)
    return rtnl.RTM_NEWLINK, draw(_HEADERS[0]) + rtnl.attr(18, info) + draw(_attributes(1))


_MESSAGE = st.one_of(
    _rtnl_message(), _vxlan_link(), st.tuples(st.sampled_from(_KINDS), st.binary(max_size=200))
)
_PAYLOAD = _MESSAGE.map(lambda m: m[1])
_KIND = st.sampled_from(_KINDS)


@st.composite
def _reply_buffer(draw: st.DrawFn) -> bytes:
    """What one recv() could hold: messages answering seq 1 (or not), errors, DONE, noise."""
    out = b""
    for kind, payload in draw(st.lists(st.tuples(_KIND | st.just(2) | st.just(3), _PAYLOAD))):
        length = rtnl.NLMSGHDR.size + len(payload)
        if draw(st.integers(0, 7)) == 0:
            length = draw(st.integers(0, 0xFFFFFFFF))
        seq = draw(st.sampled_from([1, 1, 1, 2]))
        message = rtnl.NLMSGHDR.pack(length, kind, 0, seq, 0) + payload
        out += message + b"\0" * (-len(message) % 4)
    return out + draw(st.binary(max_size=20))


@FUZZ
@given(_PAYLOAD, st.integers(min_value=0, max_value=220))
def test_attribute_parser_never_raises(data: bytes, offset: int) -> None:
    bounded(lambda d: rtnl.attributes(d, offset), data, ())


@FUZZ
@given(_reply_buffer())
def test_reply_stream_raises_only_netlink_error(data: bytes) -> None:
    bounded(lambda d: list(rtnl.replies(d, 1, "fuzz")), data, NetlinkError)


class _Canned:
    """An RtnlSocket that answers every dump and get with the same messages."""

    def __init__(self, messages: list[tuple[int, bytes]]) -> None:
        self.messages = messages

    def dump(self, *_: object) -> list[tuple[int, bytes]]:
        return self.messages

    get = dump


def _decode_all(messages: list[tuple[int, bytes]]) -> None:
    """Every decoder of agent/net/netlink.py on the same replies, each on its own (one that
    raises NetlinkError must not hide what the next one would do)."""
    nl = Netlink.__new__(Netlink)  # no socket: the kernel's part is the canned messages
    nl.rt = _Canned(messages)  # type: ignore[assignment]
    calls: list[Callable[[], object]] = [nl.links, lambda: nl.link("flannel.1"), nl.routes]
    for index in (0, 1):
        calls += [
            lambda i=index: nl.addresses(i),
            lambda i=index: nl.neighbours(i),
            lambda i=index: nl.fdb_entries(i),
            lambda i=index: nl.routes(i),
        ]
    for call in calls:
        with contextlib.suppress(NetlinkError):
            call()


@FUZZ
@given(st.lists(_MESSAGE, max_size=6))
def test_kernel_objects_decode_or_raise_netlink_error(messages: list[tuple[int, bytes]]) -> None:
    size = sum(len(p) for _, p in messages)
    bounded(lambda _: _decode_all(messages), b"\0" * size, NetlinkError)
