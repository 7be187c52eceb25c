"""Fuzzing the short paths of vantage.proxy.http1 against its full parser, with Hypothesis.

A request or response read whole may take RequestReader._simple / ResponseReader._simple (no
callback per field, bytes forwarded as received); read in 5-byte pieces it never does. For
messages built mostly from valid fields with the ones that matter mixed in (Host, framing,
hop-by-hop and proxy-set fields, odd spellings and whitespace, bad bytes, a second message
after the first), whenever the whole read took a short path the two readings must agree:
the heads, the events, and what a strict parser sees in the bytes the proxy would send on.
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.proxy.test_http1 import (
    FIELD_LIMITS,
    _request_outcome,
    _response_outcome,
    read_request,
    read_response,
)

FUZZ = settings(max_examples=int(os.environ.get("VANTAGE_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _field(names: list[bytes], colons: list[bytes], values: list[bytes]) -> st.SearchStrategy:
    return st.tuples(st.sampled_from(names), st.sampled_from(colons),
                     st.sampled_from(values)).map(b"".join)


PLAIN_REQUEST_FIELD = _field([b"Accept", b"User-Agent", b"user-agent", b"Cookie", b"X-Y"],
                             [b": ", b":", b":\t"], [b"a", b"", b" a ", b"*/*", b"\xff", b"a\tb"])
ANY_REQUEST_FIELD = _field(
    [b"Host", b"host", b"Accept", b"User-Agent", b"Connection", b"Content-Length",
     b"Transfer-Encoding", b"Expect", b"X-Forwarded-For", b"X-Forwarded-Proto", b"Upgrade", b"TE",
     b"Keep-Alive", b"Proxy-Connection", b"Trailer", b"Host ", b" Host", b"Ho st"],
    [b": ", b":", b" : "],
    [b"a", b"a.b:80", b"", b" a ", b"close", b"keep-alive", b"0", b"5", b"chunked", b"websocket",
     b"a\rb", b"a\nb", b"a\r\n b", b"x@y", b"[::1]", b"100-continue", b"a\x00"])
REQUEST_LINE = st.one_of(
    st.sampled_from([b"GET / HTTP/1.1", b"DELETE /a?b HTTP/1.1"]),
    st.tuples(st.sampled_from([b"GET", b"HEAD", b"POST", b"CONNECT", b"get", b"OPTIONS"]),
              st.sampled_from([b" ", b"  "]),
              st.sampled_from([b"/", b"/a?b", b"*", b"http://h/p", b"/a b"]),
              st.sampled_from([b" HTTP/1.1", b" HTTP/1.0", b" HTTP/2.0", b" HTTP/1.1 "])).map(
        b"".join))
FIRST_FIELD = st.sampled_from([b"Host: a", b"host:a.b:80", b"Host:  [::1] ", b"Host: x@y",
                               b"Accept: */*"])


@FUZZ
@given(REQUEST_LINE, FIRST_FIELD,
       st.lists(st.one_of(PLAIN_REQUEST_FIELD, PLAIN_REQUEST_FIELD, ANY_REQUEST_FIELD),
                max_size=6),
       st.sampled_from([b"", b"", b"", b"ab", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]),
       st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n"]))
def test_a_request_on_the_short_path_is_what_the_full_parser_makes_of_it(line, first, fields,
                                                                         after, eol):
    raw = line + eol + b"".join(f + b"\r\n" for f in (first, *fields)) + b"\r\n" + after
    handler, _ = read_request(raw, FIELD_LIMITS)
    if any(head.raw is not None for head in handler.heads):
        assert _request_outcome(raw, 0) == _request_outcome(raw, 5)


PLAIN_RESPONSE_FIELD = _field([b"Server", b"Date", b"Content-Type", b"ETag", b"X"], [b": ", b":"],
                              [b"nginx", b"", b" a ", b"\xff"])
ANY_RESPONSE_FIELD = _field(
    [b"Server", b"Content-Length", b"content-length", b"Connection", b"CONNECTION", b"Keep-Alive",
     b"Transfer-Encoding", b"Upgrade", b"Trailer", b"Proxy-Connection", b"TE", b"Set-Cookie"],
    [b": ", b":", b" :"],
    [b"2", b"0", b"3", b" 2 ", b"+2", b"2, 2", b"close", b"keep-alive", b"Keep-Alive",
     b"keep-alive, x", b"chunked", b"gzip", b"a\rb", b"a\r\n b", b""])
STATUS_LINE = st.sampled_from([
    b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK", b"HTTP/1.1 204 No Content", b"HTTP/1.1 304 NM",
    b"HTTP/1.1 101 S", b"HTTP/1.1 100 Continue", b"HTTP/1.0 200 OK", b"HTTP/1.1 200",
    b"HTTP/1.1 2000 X", b"HTTP/1.1 404 ", b"HTTP/1.1 999 Z"])
LENGTH_FIELD = st.sampled_from([b"Content-Length: 2", b"content-length:2", b"Content-Length: 0",
                                b"Content-Length:  2 "])


@FUZZ
@given(STATUS_LINE, LENGTH_FIELD,
       st.lists(st.one_of(PLAIN_RESPONSE_FIELD, PLAIN_RESPONSE_FIELD, ANY_RESPONSE_FIELD),
                max_size=5),
       st.integers(0, 5),
       st.sampled_from([b"ok", b"ok", b"ok", b"", b"o", b"okk", b"2\r\nok\r\n0\r\n\r\n",
                        b"okHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]))
def test_a_response_on_the_short_path_is_what_the_full_parser_makes_of_it(status, length, fields,
                                                                          where, body):
    fields.insert(min(where, len(fields)), length)
    raw = status + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body
    if any(head.raw is not None for head in read_response(raw).heads):
        assert _response_outcome(raw, 0) == _response_outcome(raw, 5)
