"""HTTP policies (`httppolicyset`): compiled once per configuration, evaluated per request.

Sans-IO. compile_policies() turns the policy sets of a virtual service into an HttpPolicies
object and reports every configuration problem with its field path. evaluate_request() and
evaluate_response() take the fields of one message and return what to do, or None when no rule
applies (the common case, kept cheap).

Order, as Avi applies it: the HTTP security rules of every set, then the request rules of every
set, each policy's rules by `index`. Security rules: the first match decides (allow, close,
local response, redirect to HTTPS, rate limit). Request rules: every matching rule applies;
header actions and URL rewrites accumulate, and the first matching rule with a terminal action
(switch to a pool, local response, redirect, an exceeded rate limit) ends the evaluation.
Response rules: every matching rule's header actions apply; request criteria in them are
evaluated against the request as the client sent it.

How matching is made cheap: each criterion compiles to a Python expression over the message's
fields held in local variables (`path_l.startswith(K3)`), and the rules' expressions are joined
into one generated function per direction (see HttpPolicies.source). Configuration values never
enter the generated source: they are bound to constant names (K0, K1, ...) in its namespace.
Work a criterion needs beyond that (a header index, cookies, the client address as an integer)
is done on first use within a request.
"""
from __future__ import annotations

import re
import socket
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from vantage.model import refs
from vantage.model.httppolicyset import (
    HttpPolicySet,
    MatchTarget,
    RedirectAction,
    ResponseMatchTarget,
    UriParam,
)
from vantage.proxy.http1 import HOP_BY_HOP, REASONS
from vantage.proxy.ratelimit import KeyedLimiter

# What a RequestDecision tells the proxy to do.
FORWARD = 0   # send the request on (to `pool` if set), after `header_ops`, `target`, `host`
RESPOND = 1   # answer with decision.response(...) without contacting a server
CLOSE = 2     # close the client connection without an answer
RESET = 3     # abort the client connection (TCP RST)

# Header operations, as Avi defines HTTP_ADD_HDR / HTTP_REPLACE_HDR / HTTP_REMOVE_HDR.
HDR_ADD = 0
HDR_REPLACE = 1
HDR_REMOVE = 2

#: (operation, lower-case name, name, value) -- see apply_header_ops()
HeaderOp = tuple[int, bytes, bytes, bytes]

#: default bound of each rate limiter's table of keys (client IPs, paths)
RATE_LIMIT_KEYS = 100_000

# Fields a header action may not touch: framing and connection management belong to the proxy
# (RFC 9112 §6, RFC 9110 §7.6.1).
_PROTECTED_HEADERS = HOP_BY_HOP | {b"content-length"}
_END = 65535  # URIParamToken end_index meaning "to the last one"


class PolicyError(ValueError):
    """Invalid policy configuration; `problems` holds one line per problem, each starting with
    the path of the field at fault."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class RequestDecision:
    """What to do with one request. Decisions of rules without per-request parts are shared
    between requests: read them, never modify them."""

    __slots__ = ("_location", "_responses", "action", "final", "header_ops", "host", "pool",
                 "reason", "rule", "status", "target")

    def __init__(self, action: int = FORWARD, rule: str = "") -> None:
        self.action = action
        #: name of the pool to send the request to instead of the virtual service's
        self.pool: str | None = None
        #: request target (path?query) to send to the server instead of the client's
        self.target: bytes | None = None
        #: Host to send to the server instead of the client's
        self.host: bytes | None = None
        #: operations on the request headers, for apply_header_ops()
        self.header_ops: tuple[HeaderOp, ...] = ()
        #: status of the local response (RESPOND)
        self.status = 0
        #: `<policy set>/<rule>` that decided (the last one that applied), for the request log
        self.rule = rule
        #: why the request was not forwarded (RESPOND/CLOSE/RESET), for the request log
        self.reason: str | None = None
        #: no later rule is evaluated after this decision
        self.final = action != FORWARD
        self._responses: dict[tuple[bool, bool], bytes] | None = None
        self._location: bytes | None = None

    def response(self, keep_alive: bool = True, head: bool = False) -> bytes:
        """The whole local response (RESPOND): status line, fields and body; `head` leaves the
        body out (a response to HEAD, RFC 9110 §9.3.2); `keep_alive` False adds
        `Connection: close`."""
        if self._responses is not None:
            return self._responses[(keep_alive, head)]
        return local_response(self.status, keep_alive, head, self._location)

    def _copy(self) -> RequestDecision:
        other = RequestDecision(self.action, self.rule)
        other.pool = self.pool
        other.target = self.target
        other.host = self.host
        other.header_ops = self.header_ops
        other.status = self.status
        other.reason = self.reason
        other.final = self.final
        other._responses = self._responses
        other._location = self._location
        return other

    def __repr__(self) -> str:
        kind = ("FORWARD", "RESPOND", "CLOSE", "RESET")[self.action]
        return (f"<RequestDecision {kind} rule={self.rule!r} pool={self.pool!r} "
                f"status={self.status} target={self.target!r} ops={len(self.header_ops)}>")


def local_response(status: int, keep_alive: bool = True, head: bool = False,
                   location: bytes | None = None) -> bytes:
    """A response generated by the proxy: a short text body for errors, none otherwise."""
    reason = REASONS.get(status, b"Unknown")
    if status >= 400:
        body = reason + b"\n"
        fields = b"Content-Type: text/plain\r\nContent-Length: %d\r\n" % len(body)
    elif status == 204:
        body = b""
        fields = b""  # RFC 9110 §8.6: no Content-Length in a 204
    else:
        body = b""
        fields = b"Content-Length: 0\r\n"
    if location is not None:
        fields = b"Location: " + location + b"\r\n" + fields
    if not keep_alive:
        fields += b"Connection: close\r\n"
    return b"HTTP/1.1 %d %s\r\n%s\r\n%s" % (status, reason, fields, b"" if head else body)


def _prebuilt(status: int, location: bytes | None = None) -> dict[tuple[bool, bool], bytes]:
    return {(k, h): local_response(status, k, h, location) for k in (True, False)
            for h in (True, False)}


def apply_header_ops(headers: list[tuple[bytes, bytes]], ops: Iterable[HeaderOp]) -> None:
    """Apply header operations to a header list in place (Avi semantics): ADD appends a field;
    REPLACE removes every field of that name, then appends one; REMOVE removes every field of
    that name. Names compare case-insensitively."""
    for op, lname, name, value in ops:
        if op != HDR_ADD:
            for field_name, _ in headers:
                if field_name.lower() == lname:
                    headers[:] = [f for f in headers if f[0].lower() != lname]
                    break
            if op == HDR_REMOVE:
                continue
        headers.append((name, value))


# --- helpers the generated matchers call -----------------------------------------------------

def _index_headers(headers: Iterable[tuple[bytes, bytes]], wanted: frozenset[bytes],
                   lengths: frozenset[int]) -> dict[bytes, list[bytes]]:
    """The values of the fields named in `wanted` (lower-case, of `lengths`), by lower-case
    name. Only names of a wanted length are lower-cased."""
    index: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        if len(name) not in lengths:
            continue
        lname = name.lower()
        if lname in wanted:
            values = index.get(lname)
            if values is None:
                index[lname] = [value]
            else:
                values.append(value)
    return index


def _cookies(index: dict[bytes, list[bytes]]) -> dict[bytes, bytes]:
    """The cookies of a request (RFC 6265 §4.2.1); the first of a name wins."""
    cookies: dict[bytes, bytes] = {}
    for value in index.get(b"cookie", ()):
        for pair in value.split(b";"):
            key, eq, val = pair.strip().partition(b"=")
            if eq and key not in cookies:
                cookies[key] = val
    return cookies


def _strip_port(host: bytes) -> bytes:
    if host[:1] == b"[":  # IPv6 literal (RFC 3986 §3.2.2)
        end = host.find(b"]")
        return host[:end + 1] if end > 0 else host
    return host.partition(b":")[0]


_IP_CACHE: dict[str, tuple[int, int]] = {}
_IP_CACHE_SIZE = 4096


def _client_ip(ip: str) -> tuple[int, int]:
    """_ip_int() of a client address, remembered for the next requests of the same client."""
    found = _IP_CACHE.get(ip)
    if found is None:
        if len(_IP_CACHE) >= _IP_CACHE_SIZE:
            _IP_CACHE.clear()
        found = _IP_CACHE[ip] = _ip_int(ip)
    return found


def _ip_int(ip: str) -> tuple[int, int]:
    """(IP version, address as an integer); (0, 0) when `ip` is not an address."""
    try:
        if ":" in ip:
            value = int.from_bytes(socket.inet_pton(socket.AF_INET6, ip.partition("%")[0]), "big")
            if value >> 32 == 0xFFFF:  # IPv4-mapped (dual-stack listener): match as IPv4
                return 4, value & 0xFFFFFFFF
            return 6, value
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big")
    except (OSError, ValueError):
        return 0, 0


def _ip_in(spans: tuple[tuple[int, int, int], ...], ip: tuple[int, int]) -> bool:
    version, value = ip
    for v, lo, hi in spans:
        if v == version and lo <= value <= hi:
            return True
    return False


def _any_in(needles: tuple[bytes, ...], text: bytes) -> bool:
    for needle in needles:
        if needle in text:
            return True
    return False


def _any_search(searches: tuple[Callable, ...], text: bytes) -> bool:
    for search in searches:
        if search(text) is not None:
            return True
    return False


def _query_has(names: frozenset[bytes], query: bytes) -> bool:
    for pair in query.split(b"&"):
        if pair.partition(b"=")[0] in names:
            return True
    return False


def _values_test(test: Callable[[bytes], bool], values: Sequence[bytes] | None,
                 lower: bool) -> bool:
    if values is None:
        return False
    for value in values:
        if test(value.lower() if lower else value):
            return True
    return False


def _value_test(test: Callable[[bytes], bool], value: bytes | None, lower: bool) -> bool:
    return value is not None and test(value.lower() if lower else value)


_HELPERS = {name: globals()[name] for name in (
    "_index_headers", "_cookies", "_strip_port", "_client_ip", "_ip_in", "_any_in",
    "_any_search", "_query_has", "_values_test", "_value_test")}


# --- compiling ---------------------------------------------------------------------------------

_STATUS_RE = re.compile(r"(\d{3})$")


def _status(value: str | None, default: int) -> int:
    if not value:
        return default
    found = _STATUS_RE.search(value)
    return int(found.group(1)) if found else default


def _enc(text: str) -> bytes:
    return text.encode("utf-8")


# Expressions of the generated functions that index the request's (response's) fields once.
_INDEX = "(index := _index_headers(headers, WANTED, WANTED_LENGTHS) if index is None else index)"
_RSP_INDEX = ("(rsp_index := _index_headers(rsp_headers, RSP_WANTED, RSP_LENGTHS) "
              "if rsp_index is None else rsp_index)")


def _not(expr: str, negate: bool) -> str:
    return f"not ({expr})" if negate else expr


class _Compiler:
    """Compiles one list of policy sets; collects problems instead of stopping at the first.

    Matcher methods return a Python expression over the local variables of the generated
    functions (method, path, query, path_l, query_l, host, host_l, headers, client_ip, https,
    vs_port; status and rsp_headers in responses) and record in `needs` what the function
    must prepare; every configured value is bound through const()."""

    def __init__(self, pool_names: Collection[str], pool_uuids: Mapping[str, str],
                 services: Collection[tuple[int, bool]], rate_limit_keys: int) -> None:
        self.pool_names = pool_names
        self.pool_uuids = pool_uuids
        self.services = frozenset(services)
        self.rate_limit_keys = rate_limit_keys
        self.problems: list[str] = []
        self.namespace: dict[str, Any] = dict(_HELPERS)
        self.needs: set[str] = set()
        #: lower-case names of the request / response fields some criterion reads
        self.wanted: set[bytes] = set()
        self.rsp_wanted: set[bytes] = set()

    def problem(self, path: str, text: str) -> None:
        self.problems.append(f"{path}: {text}")

    def const(self, value: Any) -> str:
        name = f"K{len(self.namespace) - len(_HELPERS)}"
        self.namespace[name] = value
        return name

    # string criteria ------------------------------------------------------------------------

    def strings(self, path: str, op: str, values: Sequence[str], sensitive: bool,
                field: str) -> str | None:
        """`field` ("path" or "query") against `values` with BEGINS_WITH, ENDS_WITH, CONTAINS,
        EQUALS, REGEX_MATCH or a negation (`op` without its QUERY_MATCH_ prefix). A negation is
        true exactly when the positive criterion is false."""
        negate = "NOT" in op
        self.needs.add("split")
        if "REGEX" in op:
            searches = []
            for i, text in enumerate(values):
                try:
                    flags = 0 if sensitive else re.IGNORECASE
                    searches.append(re.compile(_enc(text), flags).search)
                except re.error as exc:
                    self.problem(f"{path}.match_str[{i}]",
                                 f"{text!r} is not a valid regular expression ({exc})")
            if len(searches) == 1:
                return f"{self.const(searches[0])}({field}) is {'' if negate else 'not '}None"
            return _not(f"_any_search({self.const(tuple(searches))}, {field})", negate)
        if not sensitive:
            field += "_l"
            self.needs.add(field)
        encoded = tuple(_enc(v) if sensitive else _enc(v).lower() for v in values)
        if "BEGIN" in op:
            return _not(f"{field}.startswith({self.const(encoded)})", negate)
        if "END" in op:
            return _not(f"{field}.endswith({self.const(encoded)})", negate)
        if "CONTAIN" in op:
            if len(encoded) == 1:
                return f"{self.const(encoded[0])} {'not in' if negate else 'in'} {field}"
            return _not(f"_any_in({self.const(encoded)}, {field})", negate)
        if "EQUAL" in op:
            return f"{field} {'not in' if negate else 'in'} {self.const(frozenset(encoded))}"
        raise AssertionError(op)

    def path_match(self, path: str, match) -> str | None:
        op = match.match_criteria
        if op in ("BEGINS_WITH", "EQUALS", "DOES_NOT_BEGIN_WITH", "DOES_NOT_EQUAL"):
            # Avi: a path starts with "/" (RFC 3986), so these strings must too
            for i, text in enumerate(match.match_str):
                if not text.startswith("/"):
                    self.problem(f"{path}.match_str[{i}]", f"{text!r} must start with '/' "
                                 f"for {op} (a request path always does)")
        return self.strings(path, op, match.match_str, match.match_case == "SENSITIVE", "path")

    def query_match(self, path: str, match) -> str | None:
        op = match.match_criteria.removeprefix("QUERY_MATCH_")
        if op in ("EXISTS", "DOES_NOT_EXIST"):
            self.needs.add("split")
            negate = op == "DOES_NOT_EXIST"
            if not match.match_str:
                return _not("query", negate)  # a query string is present
            names = frozenset(_enc(n) for n in match.match_str)
            return _not(f"_query_has({self.const(names)}, query)", negate)  # a parameter is
        if not match.match_str:
            self.problem(f"{path}.match_str", f"at least one string is needed with "
                         f"{match.match_criteria}")
            return None
        return self.strings(path, op, match.match_str, match.match_case == "SENSITIVE", "query")

    def value_test(self, path: str, op: str, values: Sequence[str], sensitive: bool
                   ) -> tuple[str, bool] | None:
        """(name of a test on one value, negated) for an HDR_* criterion other than
        HDR_EXISTS / HDR_DOES_NOT_EXIST."""
        if not values:
            self.problem(f"{path}.value", f"at least one value is needed with HDR_{op}")
            return None
        encoded = tuple(_enc(v) if sensitive else _enc(v).lower() for v in values)
        if "BEGIN" in op:
            def test(v: bytes) -> bool:
                return v.startswith(encoded)
        elif "END" in op:
            def test(v: bytes) -> bool:
                return v.endswith(encoded)
        elif "CONTAIN" in op:
            def test(v: bytes) -> bool:
                return _any_in(encoded, v)
        else:
            choices = frozenset(encoded)

            def test(v: bytes) -> bool:
                return v in choices
        return self.const(test), "NOT" in op

    def header_match(self, path: str, hdr: Any, need: str, index: str,
                     wanted: set[bytes]) -> str | None:
        """A request (`index`) or response (`rsp_index`) header match: the header is looked
        up in that message's index of the `wanted` header names."""
        self.needs.add(need)
        lname = _enc(hdr.hdr).lower()
        wanted.add(lname)
        return self.header_criteria(path, hdr.match_criteria, hdr.value,
                                    hdr.match_case == "SENSITIVE",
                                    f"{index}.get({self.const(lname)})")

    def header_criteria(self, path: str, op: str, values: Sequence[str], sensitive: bool,
                        source: str, single: bool = False) -> str | None:
        """HDR_* criteria over the values one field has in a message (`source`: expression of
        a list of values, or of one value when `single`, None when absent). Any value may
        match; DOES_NOT_* negates the positive criterion, so it holds when the field is absent."""
        op = op.removeprefix("HDR_")
        if op == "EXISTS":
            return f"{source} is not None"
        if op == "DOES_NOT_EXIST":
            return f"{source} is None"
        tested = self.value_test(path, op, values, sensitive)
        if tested is None:
            return None
        test, negate = tested
        helper = "_value_test" if single else "_values_test"
        return _not(f"{helper}({test}, {source}, {not sensitive})", negate)

    def host_match(self, path: str, match) -> str | None:
        """Host criteria on the Host header without its port."""
        op = match.match_criteria.removeprefix("HDR_")
        if op == "EXISTS":
            return "host is not None"
        if op == "DOES_NOT_EXIST":
            return "host is None"
        sensitive = match.match_case == "SENSITIVE"
        field = "host" if sensitive else "host_l"
        if not sensitive:
            self.needs.add("host_l")
        if op in ("EQUALS", "DOES_NOT_EQUAL") and match.value:
            choices = frozenset(_enc(v) if sensitive else _enc(v).lower() for v in match.value)
            return _not(f"{field} in {self.const(choices)}", op == "DOES_NOT_EQUAL")
        tested = self.value_test(path, op, match.value, sensitive)
        if tested is None:
            return None
        test, negate = tested
        return _not(f"{field} is not None and {test}({field})", negate)

    def ip_match(self, path: str, match) -> str | None:
        spans: list[tuple[int, int, int]] = []
        for addr in match.addrs:
            version, value = _ip_int(addr.addr)
            spans.append((version, value, value))
        for prefix in match.prefixes:
            network = prefix.network()
            spans.append((network.version, int(network.network_address),
                          int(network.broadcast_address)))
        for i, span in enumerate(match.ranges):
            (v1, lo), (v2, hi) = _ip_int(span.begin.addr), _ip_int(span.end.addr)
            if v1 != v2 or lo > hi:
                self.problem(f"{path}.ranges[{i}]", f"{span.begin.addr}-{span.end.addr} is not "
                             "a range (same IP version, begin <= end)")
                continue
            spans.append((v1, lo, hi))
        if not spans:
            self.problem(path, "give at least one of addrs, prefixes, ranges")
            return None
        self.needs.add("ip")
        return _not(f"_ip_in({self.const(tuple(spans))}, "
                    "(ip := _client_ip(client_ip) if ip is None else ip))",
                    match.match_criteria == "IS_NOT_IN")

    def status_match(self, path: str, match) -> str | None:
        codes = set(match.status_codes)
        for i, span in enumerate(match.ranges):
            if span.begin > span.end:
                self.problem(f"{path}.ranges[{i}]", f"begin {span.begin} is after end {span.end}")
            codes.update(range(span.begin, span.end + 1))
        if not codes:
            self.problem(path, "give status_codes or ranges")
            return None
        negate = match.match_criteria == "IS_NOT_IN"
        return f"status {'not in' if negate else 'in'} {self.const(frozenset(codes))}"

    def match_target(self, path: str, match: MatchTarget | None) -> str:
        """One expression true when every criterion of `match` holds ("True" for none)."""
        if match is None:
            return "True"
        exprs: list[str | None] = []
        if match.method is not None:
            methods = frozenset(_enc(m.removeprefix("HTTP_METHOD_")) for m in match.method.methods)
            negate = match.method.match_criteria == "IS_NOT_IN"
            exprs.append(f"method {'not in' if negate else 'in'} {self.const(methods)}")
        if match.protocol is not None:
            want_https = match.protocol.protocols == "HTTPS"
            excluded = match.protocol.match_criteria == "IS_NOT_IN"
            exprs.append(_not("https", want_https == excluded))
        if match.vs_port is not None:
            negate = match.vs_port.match_criteria == "IS_NOT_IN"
            exprs.append(f"vs_port {'not in' if negate else 'in'} "
                         f"{self.const(frozenset(match.vs_port.ports))}")
        if match.host_hdr is not None:
            exprs.append(self.host_match(f"{path}.host_hdr", match.host_hdr))
        if match.path is not None:
            exprs.append(self.path_match(f"{path}.path", match.path))
        if match.query is not None:
            exprs.append(self.query_match(f"{path}.query", match.query))
        for i, hdr in enumerate(match.hdrs):
            exprs.append(self.header_match(f"{path}.hdrs[{i}]", hdr, "index", _INDEX,
                                           self.wanted))
        if match.cookie is not None:
            cookie = match.cookie
            self.needs.update(("index", "cookies"))
            self.wanted.add(b"cookie")
            name = self.const(_enc(cookie.name))
            source = f"(cookies := _cookies({_INDEX}) if cookies is None else cookies).get({name})"
            exprs.append(self.header_criteria(
                f"{path}.cookie", cookie.match_criteria,
                [cookie.value] if cookie.value is not None else [],
                cookie.match_case == "SENSITIVE", source, single=True))
        if match.client_ip is not None:
            exprs.append(self.ip_match(f"{path}.client_ip", match.client_ip))
        if isinstance(match, ResponseMatchTarget):
            if match.status is not None:
                exprs.append(self.status_match(f"{path}.status", match.status))
            for i, hdr in enumerate(match.rsp_hdrs):
                exprs.append(self.header_match(f"{path}.rsp_hdrs[{i}]", hdr, "rsp_index",
                                               _RSP_INDEX, self.rsp_wanted))
        valid = [f"({e})" for e in exprs if e is not None]
        return " and ".join(valid) if valid else "True"

    def prelude(self) -> list[str]:
        """Lines preparing what the matchers need, at the top of a generated function."""
        lines = ["if host is not None and b':' in host:", "    host = _strip_port(host)"]
        if "split" in self.needs or "path_l" in self.needs or "query_l" in self.needs:
            lines.append("path, _, query = target.partition(b'?')")
        if "path_l" in self.needs:
            lines.append("path_l = path.lower()")
        if "query_l" in self.needs:
            lines.append("query_l = query.lower()")
        if "host_l" in self.needs:
            lines.append("host_l = host.lower() if host is not None else None")
        for lazy in ("index", "cookies", "ip", "rsp_index"):
            if lazy in self.needs:
                lines.append(f"{lazy} = None")
        return lines

    # actions --------------------------------------------------------------------------------

    def header_ops(self, path: str, actions, request: bool) -> tuple[tuple[HeaderOp, ...],
                                                                      bytes | None]:
        """(header operations, new Host or None). A request's Host is rewritten, not edited."""
        ops: list[HeaderOp] = []
        host = None
        for i, action in enumerate(actions):
            where = f"{path}[{i}]"
            name = _enc(action.hdr.name)
            lname = name.lower()
            if lname in _PROTECTED_HEADERS:
                self.problem(f"{where}.hdr.name", f"{action.hdr.name} is managed by the proxy "
                             "(framing and connection fields cannot be changed by a policy)")
                continue
            op = {"HTTP_ADD_HDR": HDR_ADD, "HTTP_REPLACE_HDR": HDR_REPLACE,
                  "HTTP_REMOVE_HDR": HDR_REMOVE}[action.action]
            value = b""
            if op != HDR_REMOVE:
                if action.hdr.value is None:
                    self.problem(f"{where}.hdr.value", f"a value is needed with {action.action}")
                    continue
                value = _enc(action.hdr.value.val)
                if b"\r" in value or b"\n" in value or b"\0" in value:
                    self.problem(f"{where}.hdr.value.val", "a header value cannot contain CR, "
                                 "LF or NUL (RFC 9110 §5.5)")
                    continue
            if request and lname == b"host":
                if op != HDR_REPLACE:
                    self.problem(f"{where}.action", "the Host header can only be replaced "
                                 "(HTTP_REPLACE_HDR): a request has exactly one (RFC 9112 §3.2)")
                    continue
                host = value
                continue
            ops.append((op, lname, name, value))
        return tuple(ops), host

    def pool(self, path: str, ref: str) -> str | None:
        try:
            parsed = refs.parse_ref(ref, "pool", allow_bare_name=True)
        except refs.RefError as exc:
            self.problem(path, str(exc))
            return None
        name = parsed.name if parsed.name is not None else self.pool_uuids.get(parsed.uuid)
        if name is None or name not in self.pool_names:
            known = ", ".join(sorted(self.pool_names)) or "none"
            self.problem(path, f"no pool {parsed.name or parsed.uuid!r} in this configuration "
                         f"(pools: {known})")
            return None
        return name

    def uri_param(self, path: str, param: UriParam | str | None, host: bool
                  ) -> tuple[bytes | None, Callable[[bytes, bytes | None], bytes] | None]:
        """(constant, builder): a constant as bytes, or a function of (target, host) when
        tokens take parts of the request. Path tokens are joined with '/' after a leading '/';
        host tokens with '.'. Token indexes count path segments or host labels from 0."""
        if param is None:
            return None, None
        sep = b"." if host else b"/"
        if isinstance(param, str):
            value = _enc(param)
            if not host and not value.startswith(b"/"):
                value = b"/" + value
            return value, None
        pieces: list[bytes | tuple[int, int]] = []
        for i, token in enumerate(param.tokens):
            where = f"{path}.tokens[{i}]"
            kind = token.type
            if kind == "URI_TOKEN_TYPE_STRING":
                if token.str_value is None:
                    self.problem(f"{where}.str_value", "needed with URI_TOKEN_TYPE_STRING")
                    continue
                pieces.append(_enc(token.str_value).strip(sep))
            elif kind == ("URI_TOKEN_TYPE_HOST" if host else "URI_TOKEN_TYPE_PATH"):
                start = token.start_index or 0
                end = _END if token.end_index is None else token.end_index
                if end < start:
                    self.problem(f"{where}.end_index", f"{end} is before start_index {start}")
                    continue
                pieces.append((start, end))
            else:
                self.problem(f"{where}.type", f"{kind} is not supported here (use "
                             f"URI_TOKEN_TYPE_STRING or "
                             f"{'URI_TOKEN_TYPE_HOST' if host else 'URI_TOKEN_TYPE_PATH'})")
        if all(isinstance(p, bytes) for p in pieces):
            joined = sep.join(p for p in pieces if p)
            return (joined if host else b"/" + joined), None
        frozen = tuple(pieces)

        def build(target: bytes, request_host: bytes | None) -> bytes:
            parts = ((request_host or b"").split(b".") if host
                     else target.partition(b"?")[0].strip(b"/").split(b"/"))
            out = []
            for piece in frozen:
                if isinstance(piece, bytes):
                    if piece:
                        out.append(piece)
                else:
                    out.extend(p for p in parts[piece[0]:piece[1] + 1] if p)
            joined = sep.join(out)
            return joined if host else b"/" + joined
        return None, build

    def redirect(self, path: str, action: RedirectAction, rule: str) -> _Redirect:
        host, host_build = self.uri_param(f"{path}.host", action.host, True)
        target_path, path_build = self.uri_param(f"{path}.path", action.path, False)
        https = action.protocol == "HTTPS"
        default_port = 443 if https else 80
        port = action.port if action.port not in (None, default_port) else None
        add = _enc(action.add_string) if action.add_string else b""
        return _Redirect(rule, _status(action.status_code, 302), b"https" if https else b"http",
                         port, host, host_build, target_path, path_build, action.keep_query, add)


class _Redirect:
    """A redirect action: the Location is prebuilt when nothing in it comes from the request."""

    __slots__ = ("add", "host", "host_build", "keep_query", "path", "path_build", "port", "rule",
                 "scheme", "static", "status")

    def __init__(self, rule, status, scheme, port, host, host_build, path, path_build,
                 keep_query, add) -> None:
        self.rule = rule
        self.status = status
        self.scheme = scheme
        self.port = port
        self.host = host
        self.host_build = host_build
        self.path = path
        self.path_build = path_build
        self.keep_query = keep_query
        self.add = add
        self.static: RequestDecision | None = None
        if host is not None and path is not None and not keep_query:
            self.static = self.decision(b"", None)
            self.static._responses = _prebuilt(status, self.static._location)

    def location(self, target: bytes, request_host: bytes | None) -> bytes:
        """`request_host`: the request's Host without its port."""
        host = self.host
        if host is None:
            host = (self.host_build(target, request_host) if self.host_build is not None
                    else request_host)
        old_path, _, query = target.partition(b"?")
        path = self.path
        if path is None:
            path = (self.path_build(target, request_host) if self.path_build is not None
                    else old_path)
        if not self.keep_query:
            query = b""
        if self.add:
            query = query + b"&" + self.add if query else self.add
        tail = path + (b"?" + query if query else b"")
        if not host:
            return tail  # no Host to build an absolute URI: a relative reference (RFC 9110 §10.2.2)
        if self.port is not None:
            host = b"%s:%d" % (host, self.port)
        return self.scheme + b"://" + host + tail

    def decision(self, target: bytes, request_host: bytes | None) -> RequestDecision:
        if self.static is not None:
            return self.static
        decision = RequestDecision(RESPOND, self.rule)
        decision.status = self.status
        decision.reason = f"redirected by {self.rule}"
        decision._location = self.location(target, request_host)
        return decision


class _RateLimiter:
    """A rule's rate limit: the key is the client address, the path, or both."""

    __slots__ = ("per_ip", "per_path", "limiter")

    def __init__(self, count: int, period: int, burst: int, per_ip: bool, per_path: bool,
                 max_keys: int) -> None:
        self.per_ip = per_ip
        self.per_path = per_path
        self.limiter = KeyedLimiter(count, period, burst, max_keys)

    def allow(self, client_ip: str, target: bytes, now: float) -> bool:
        if self.per_ip:
            key = (client_ip, target.partition(b"?")[0]) if self.per_path else client_ip
        else:
            key = target.partition(b"?")[0] if self.per_path else None
        return self.limiter.allow(key, now)


class _Rule:
    """What a matching rule does, with everything that does not depend on the request
    prepared."""

    __slots__ = ("effects", "header_ops", "host", "kind", "label", "limited",
                 "limited_redirect", "limiter", "match", "pool", "redirect", "respond",
                 "rewrite", "static")

    def __init__(self, label: str, match: str) -> None:
        self.label = label
        #: the expression matching the rule (generated source)
        self.match = match
        self.limiter: _RateLimiter | None = None
        #: decision when the limit is exceeded (None: RL_ACTION_NONE, or see limited_redirect)
        self.limited: RequestDecision | None = None
        self.limited_redirect: _Redirect | None = None
        self.redirect: _Redirect | None = None
        #: the local response (or close) this rule ends with
        self.respond: RequestDecision | None = None
        #: the decision of this rule alone when nothing in it depends on the request
        self.static: RequestDecision | None = None
        self.header_ops: tuple[HeaderOp, ...] = ()
        self.pool: str | None = None
        self.host: bytes | None = None
        self.rewrite: Callable[[bytes, bytes | None], bytes] | None = None
        #: whether the rule changes a forwarded request (headers, target, Host, pool)
        self.effects = False
        self.kind = ""  # security rules: ALLOW, CLOSE, RESPOND, HTTPS, LIMIT


def _limited(rule: _Rule, client_ip: str, target: bytes, host: bytes | None,
             now: float) -> RequestDecision | None:
    """The decision of an exceeded rate limit, or None when under it (or RL_ACTION_NONE)."""
    if rule.limiter.allow(client_ip, target, now):
        return None
    if rule.limited_redirect is not None:
        return rule.limited_redirect.decision(target, host)
    return rule.limited


def _security(rule: _Rule, target: bytes, host: bytes | None, client_ip: str, now: float,
              https: bool) -> RequestDecision | None:
    """The decision of the first matching security rule; None lets request rules run."""
    kind = rule.kind
    if kind == "LIMIT":
        return _limited(rule, client_ip, target, host, now)
    if kind == "HTTPS":
        return None if https else rule.redirect.decision(target, host)
    return rule.respond  # ALLOW: None


def _apply(rule: _Rule, decision: RequestDecision | None, target: bytes, host: bytes | None,
           client_ip: str, now: float) -> RequestDecision | None:
    """Apply one matching request rule on top of what earlier rules decided."""
    if rule.limiter is not None:
        limited = _limited(rule, client_ip, target, host, now)
        if limited is not None:
            return limited
    if rule.redirect is not None:
        return rule.redirect.decision(target, host)
    if rule.respond is not None:
        return rule.respond  # a local response: what earlier rules changed no longer matters
    if not rule.effects:
        return decision  # e.g. a rate limit alone, under its limit
    if decision is None and rule.static is not None:
        return rule.static
    decision = RequestDecision(FORWARD, rule.label) if decision is None else decision._copy()
    decision.rule = rule.label
    if rule.header_ops:
        decision.header_ops = (decision.header_ops + rule.header_ops if decision.header_ops
                               else rule.header_ops)
    if rule.rewrite is not None:
        decision.target = rule.rewrite(target, host)
    if rule.host is not None:
        decision.host = rule.host
    if rule.pool is not None:
        decision.pool = rule.pool
        decision.final = True
    return decision


_REQUEST_ARGS = "method, target, host, headers, client_ip, now, https=False, vs_port=0"
_RESPONSE_ARGS = ("status, rsp_headers, method, target, host, headers, client_ip, https=False, "
                  "vs_port=0")


def _generate(compiler: _Compiler, security: list[_Rule], request: list[_Rule],
              response: list[_Rule]) -> tuple[str, Callable, Callable]:
    """Source and functions of evaluate_request and evaluate_response."""
    namespace = compiler.namespace
    namespace.update(_security=_security, _apply=_apply, WANTED=frozenset(compiler.wanted),
                     WANTED_LENGTHS=frozenset(map(len, compiler.wanted)),
                     RSP_WANTED=frozenset(compiler.rsp_wanted),
                     RSP_LENGTHS=frozenset(map(len, compiler.rsp_wanted)))
    prelude = ["    " + line for line in compiler.prelude()]
    lines = [f"def evaluate_request({_REQUEST_ARGS}):"]
    if security or request:
        lines += prelude
    else:
        lines.append("    return None")
    for i, rule in enumerate(security):
        namespace[f"S{i}"] = rule
        lines += [f"    {'if' if i == 0 else 'elif'} {rule.match}:",
                  f"        d = _security(S{i}, target, host, client_ip, now, https)",
                  "        if d is not None:",
                  "            return d"]
    if request:
        lines.append("    d = None")
    for i, rule in enumerate(request):
        namespace[f"R{i}"] = rule
        lines += [f"    if {rule.match}:",
                  f"        d = _apply(R{i}, d, target, host, client_ip, now)",
                  "        if d is not None and d.final:",
                  "            return d"]
    if request:
        lines.append("    return d")
    lines += ["", "", f"def evaluate_response({_RESPONSE_ARGS}):"]
    if response:
        lines += prelude + ["    ops = None"]
        for i, rule in enumerate(response):
            namespace[f"P{i}"] = rule.header_ops
            lines += [f"    if {rule.match}:",
                      f"        ops = P{i} if ops is None else ops + P{i}"]
        lines.append("    return ops")
    else:
        lines.append("    return None")
    source = "\n".join(lines) + "\n"
    exec(compile(source, "<httppolicies>", "exec"), namespace)
    return source, namespace["evaluate_request"], namespace["evaluate_response"]


class HttpPolicies:
    """The compiled policies of one virtual service (see compile_policies).

    `evaluate_request` and `evaluate_response` are generated per instance (their contract is
    documented on the methods below, which the instance attributes replace)."""

    def __init__(self, security: list[_Rule], request: list[_Rule], response: list[_Rule],
                 compiler: _Compiler) -> None:
        self._security = tuple(security)
        self._request = tuple(request)
        self._response = tuple(response)
        #: False: evaluate_request() always answers None; the caller may skip it
        self.has_request_rules = bool(security or request)
        #: False: evaluate_response() always answers None; the caller may skip it
        self.has_response_rules = bool(response)
        #: the generated Python source of the two evaluation functions, for debugging
        self.source, self.evaluate_request, self.evaluate_response = _generate(
            compiler, security, request, response)

    def evaluate_request(self, method: bytes, target: bytes, host: bytes | None,
                         headers: Sequence[tuple[bytes, bytes]], client_ip: str, now: float,
                         https: bool = False, vs_port: int = 0) -> RequestDecision | None:
        """What to do with a request, or None to forward it unchanged (no rule applied).

        `target`: the request target in origin form (path?query); `host`: the Host header
        (None when the request had none); `headers`: the request's fields (names in any case);
        `now`: a monotonic clock in seconds (rate limits); `https`: whether the client
        connection is TLS; `vs_port`: the virtual service port the request arrived on.
        Never raises on odd input.
        """
        raise NotImplementedError  # replaced in __init__

    def evaluate_response(self, status: int, rsp_headers: Sequence[tuple[bytes, bytes]],
                          method: bytes, target: bytes, host: bytes | None,
                          headers: Sequence[tuple[bytes, bytes]], client_ip: str,
                          https: bool = False, vs_port: int = 0) -> tuple[HeaderOp, ...] | None:
        """Header operations for a response (apply them with apply_header_ops), or None.
        `rsp_headers` are the response's fields; the request fields are those the client sent
        (before any request rule changed them)."""
        raise NotImplementedError  # replaced in __init__


def compile_policies(sets: Sequence[HttpPolicySet], pool_names: Collection[str], *,
                     pool_uuids: Mapping[str, str] | None = None,
                     services: Collection[tuple[int, bool]] = (),
                     rate_limit_keys: int = RATE_LIMIT_KEYS) -> HttpPolicies:
    """Compile the policy sets of one virtual service, in the order given (the virtual
    service's `http_policies` by index).

    `pool_names`: the pools a switching action may name (refs by name, `/api/pool?name=`, or
    by UUID through `pool_uuids`, uuid -> name). `services`: the virtual service's listeners as
    (port, TLS) pairs; with them, a redirect that would bring the client back to the same rule
    (a loop) is detected for any target port and protocol. `rate_limit_keys` bounds the keys
    (client IPs, paths) each rate limiter remembers; the least recently seen go first.

    Raises PolicyError (a ValueError) listing every problem, each line naming its field path:
    invalid regular expressions, unknown pools, unsupported actions, redirect loops.
    """
    compiler = _Compiler(pool_names, pool_uuids or {}, services, rate_limit_keys)
    security: list[_Rule] = []
    request: list[_Rule] = []
    response: list[_Rule] = []
    for policy_set in sets:
        prefix = f"httppolicyset {policy_set.name!r}"
        if policy_set.http_security_policy is not None:
            for i, rule in _ordered(policy_set.http_security_policy.rules):
                where = f"{prefix}: http_security_policy.rules[{i}]"
                compiled = _security_rule(compiler, where, f"{policy_set.name}/{rule.name}", rule)
                if compiled is not None and rule.enable:
                    security.append(compiled)
        if policy_set.http_request_policy is not None:
            for i, rule in _ordered(policy_set.http_request_policy.rules):
                where = f"{prefix}: http_request_policy.rules[{i}]"
                compiled = _request_rule(compiler, where, f"{policy_set.name}/{rule.name}", rule)
                if rule.enable:
                    request.append(compiled)
        if policy_set.http_response_policy is not None:
            for i, rule in _ordered(policy_set.http_response_policy.rules):
                where = f"{prefix}: http_response_policy.rules[{i}]"
                compiled = _Rule(f"{policy_set.name}/{rule.name}",
                                 compiler.match_target(f"{where}.match", rule.match))
                compiled.header_ops, _ = compiler.header_ops(f"{where}.hdr_action",
                                                             rule.hdr_action, request=False)
                if rule.enable and compiled.header_ops:
                    response.append(compiled)
    if compiler.problems:
        raise PolicyError(compiler.problems)
    return HttpPolicies(security, request, response, compiler)


def _ordered(rules: Sequence[Any]) -> list[tuple[int, Any]]:
    """Rules with their position in the list (for error paths), in `index` order."""
    return sorted(enumerate(rules), key=lambda item: item[1].index)


def _limit(compiler: _Compiler, rule: _Rule, where: str, limit) -> None:
    limiter = limit.rate_limiter
    rule.limiter = _RateLimiter(limiter.count, limiter.period, limiter.burst_sz,
                                limit.per_client_ip, limit.per_uri_path, compiler.rate_limit_keys)
    action = limit.action
    kind = action.type
    if kind == "RL_ACTION_REDIRECT":
        rule.limited_redirect = compiler.redirect(f"{where}.redirect", action.redirect,
                                                  rule.label)
        return
    if kind == "RL_ACTION_NONE":
        return
    if kind == "RL_ACTION_LOCAL_RSP":
        decision = RequestDecision(RESPOND, rule.label)
        decision.status = _status(action.status_code, 429)
        decision._responses = _prebuilt(decision.status)
    else:  # DROP_CONN, CLOSE_CONN: close without an answer; RESET_CONN: abort
        decision = RequestDecision(RESET if kind == "RL_ACTION_RESET_CONN" else CLOSE,
                                   rule.label)
    decision.reason = f"rate limit of {rule.label} exceeded"
    rule.limited = decision


def _security_rule(compiler: _Compiler, where: str, label: str, rule) -> _Rule | None:
    compiled = _Rule(label, compiler.match_target(f"{where}.match", rule.match))
    action = rule.action
    kind = action.action
    if kind == "HTTP_SECURITY_ACTION_ALLOW":
        compiled.kind = "ALLOW"
    elif kind == "HTTP_SECURITY_ACTION_CLOSE_CONN":
        compiled.kind = "CLOSE"
        compiled.respond = RequestDecision(CLOSE, label)
        compiled.respond.reason = f"connection closed by {label}"
    elif kind == "HTTP_SECURITY_ACTION_SEND_RESPONSE":
        compiled.kind = "RESPOND"
        decision = compiled.respond = RequestDecision(RESPOND, label)
        decision.status = _status(action.status_code, 403)
        decision.reason = f"answered by {label}"
        decision._responses = _prebuilt(decision.status)
    elif kind == "HTTP_SECURITY_ACTION_REDIRECT_TO_HTTPS":
        compiled.kind = "HTTPS"
        port = action.https_port if action.https_port not in (None, 443) else None
        compiled.redirect = _Redirect(label, 302, b"https", port, None, None, None, None,
                                      True, b"")
    elif kind == "HTTP_SECURITY_ACTION_RATE_LIMIT":
        compiled.kind = "LIMIT"
        _limit(compiler, compiled, f"{where}.action.rate_profile.action", action.rate_profile)
    else:
        compiler.problem(f"{where}.action.action", f"{kind} is not supported by this SE")
        return None
    return compiled


def _request_rule(compiler: _Compiler, where: str, label: str, rule) -> _Rule:
    compiled = _Rule(label, compiler.match_target(f"{where}.match", rule.match))
    if rule.rate_limit_action is not None:
        _limit(compiler, compiled, f"{where}.rate_limit_action.action", rule.rate_limit_action)
    compiled.header_ops, compiled.host = compiler.header_ops(f"{where}.hdr_action",
                                                             rule.hdr_action, request=True)
    rewrite = rule.rewrite_url_action
    if rewrite is not None:
        host, host_build = compiler.uri_param(f"{where}.rewrite_url_action.host_hdr",
                                              rewrite.host_hdr, True)
        if host_build is not None:
            compiler.problem(f"{where}.rewrite_url_action.host_hdr", "a rewritten Host must be "
                             "constant (URI_TOKEN_TYPE_STRING tokens)")
        if host is not None:
            compiled.host = host
        compiled.rewrite = _rewriter(compiler, f"{where}.rewrite_url_action", rewrite)
    switching = rule.switching_action
    if rule.redirect_action is not None:
        if rule.hdr_action or rule.rewrite_url_action is not None:
            compiler.problem(f"{where}.redirect_action", "a redirect cannot be combined with "
                             "hdr_action or rewrite_url_action (the request is not forwarded)")
        compiled.redirect = compiler.redirect(f"{where}.redirect_action", rule.redirect_action,
                                              label)
        _check_loop(compiler, where, rule, compiled.redirect)
    elif switching is not None:
        action = switching.action
        if action == "HTTP_SWITCHING_SELECT_POOL":
            compiled.pool = compiler.pool(f"{where}.switching_action.pool_ref", switching.pool_ref)
        elif action == "HTTP_SWITCHING_SELECT_LOCAL":
            decision = compiled.respond = RequestDecision(RESPOND, label)
            decision.status = _status(switching.status_code, 200)
            decision.reason = f"answered by {label}"
            decision._responses = _prebuilt(decision.status)
        else:
            compiler.problem(f"{where}.switching_action.action", f"{action} is not supported by "
                             "this SE yet; use HTTP_SWITCHING_SELECT_POOL")
    compiled.effects = bool(compiled.header_ops or compiled.host is not None
                            or compiled.pool is not None or compiled.rewrite is not None)
    if compiled.effects and compiled.rewrite is None:
        static = RequestDecision(FORWARD, label)
        static.header_ops = compiled.header_ops
        static.host = compiled.host
        static.pool = compiled.pool
        static.final = compiled.pool is not None
        compiled.static = static
    return compiled


def _rewriter(compiler: _Compiler, where: str,
              rewrite) -> Callable[[bytes, bytes | None], bytes] | None:
    if rewrite.path is None and rewrite.query is None:
        return None
    path, path_build = compiler.uri_param(f"{where}.path", rewrite.path, False)
    keep_query = rewrite.query.keep_query if rewrite.query is not None else True
    add = (_enc(rewrite.query.add_string) if rewrite.query is not None
           and rewrite.query.add_string else b"")

    def build(target: bytes, host: bytes | None) -> bytes:
        old_path, _, query = target.partition(b"?")
        new_path = path if path is not None else (
            path_build(target, host) if path_build is not None else old_path)
        if not keep_query:
            query = b""
        if add:
            query = query + b"&" + add if query else add
        return new_path + b"?" + query if query else new_path
    return build


# --- redirect loops --------------------------------------------------------------------------

def _check_loop(compiler: _Compiler, where: str, rule, redirect: _Redirect) -> None:
    """A redirect loops when the request it sends the client to certainly comes back to this
    virtual service and certainly matches the same rule again. Only certain loops are errors:
    a condition whose outcome on the new request cannot be known (headers, cookies, a host or
    path built from the request, another host without a host condition) breaks the loop."""
    https = redirect.scheme == b"https"
    port = redirect.port or (443 if https else 80)
    match = rule.match
    if compiler.services:
        if (port, https) not in compiler.services:
            return  # the client is sent to another listener
    elif not (match is not None and match.protocol is not None
              and match.protocol.match_criteria == "IS_IN"
              and (match.protocol.protocols == "HTTPS") == https
              and match.vs_port is not None and match.vs_port.match_criteria == "IS_IN"
              and set(match.vs_port.ports) == {port}):
        return  # without the listeners, only a rule pinned to the target's protocol and port
    if redirect.host is not None or redirect.host_build is not None:
        # another host may be served elsewhere; only a host condition tells it is served here
        if match is None or match.host_hdr is None or redirect.host_build is not None:
            return
        if not _matches(match, "host_hdr", host=redirect.host):
            return
    if match is None:
        return _loop(compiler, where, redirect, port)
    if match.hdrs or match.cookie is not None:
        return
    if match.path is not None and redirect.path is not None:
        if not _matches(match, "path", target=redirect.path):
            return
    elif match.path is not None and redirect.path_build is not None:
        return
    if match.query is not None:
        if redirect.keep_query and redirect.add:
            return
        if not redirect.keep_query and not _matches(match, "query", target=b"/?" + redirect.add):
            return
    if (match.method is not None and redirect.status in (301, 302, 303)  # followed with GET
            and not _matches(match, "method", method=b"GET")):
        return
    if match.protocol is not None and not _matches(match, "protocol", https=https):
        return
    if match.vs_port is not None and not _matches(match, "vs_port", vs_port=port):
        return
    _loop(compiler, where, redirect, port)


def _matches(match: MatchTarget, field: str, **request: Any) -> bool:
    """Would the `field` criterion of `match` accept the redirected request?"""
    probe = _Compiler((), {}, (), 1)
    expr = probe.match_target("probe", MatchTarget(**{field: getattr(match, field)}))
    probe.namespace.update(WANTED=frozenset(), WANTED_LENGTHS=frozenset(),
                           RSP_WANTED=frozenset(), RSP_LENGTHS=frozenset())
    lines = ["def probe(method, target, host, headers, client_ip, https, vs_port):",
             *("    " + line for line in probe.prelude()), f"    return {expr}"]
    exec(compile("\n".join(lines), "<probe>", "exec"), probe.namespace)
    fields = {"method": b"GET", "target": b"/", "host": None, "headers": (), "client_ip": "",
              "https": False, "vs_port": 0, **request}
    return bool(probe.namespace["probe"](**fields))


def _loop(compiler: _Compiler, where: str, redirect: _Redirect, port: int) -> None:
    scheme = redirect.scheme.decode()
    compiler.problem(f"{where}.redirect_action", f"redirect loop: the {scheme} request on port "
                     f"{port} it sends the client to matches this rule again; add a match "
                     "condition that excludes it (protocol, vs_port, host_hdr or path) or "
                     "change the target")
