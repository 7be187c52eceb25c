"""Session persistence (`applicationpersistenceprofile`): which server a returning client gets.

Sans-IO: time comes in as an argument and nothing here touches a socket. make_persistence()
builds one Persistence per pool from its profile:

- PERSISTENCE_TYPE_CLIENT_IP_ADDRESS (and _IPV6_): a table client IP (masked by `ip_mask`) ->
  server, kept `ip_persistent_timeout` minutes after the last request, bounded in size (the least
  recently used entries go first).
- PERSISTENCE_TYPE_HTTP_COOKIE: the SE inserts a cookie holding the server's identity encrypted
  and authenticated with AES-GCM under a key of the SE (never the raw address). A cookie that does
  not decrypt (tampered, foreign, from a rotated-out key) is ignored: the client is balanced anew.
- PERSISTENCE_TYPE_CUSTOM_HTTP_HEADER: a request header's value selects the server whose
  `prst_hdr_val` equals it (Avi's static mapping); when no server of the pool has one, the SE
  learns value -> server like the client IP table.

When the persisted server is not available, `server_hm_down_recovery` decides: pick a new one
(HM_DOWN_PICK_NEW_SERVER), refuse the request (HM_DOWN_ABORT_CONNECTION: PersistentServerDown),
or keep sending to it while it is down (HM_DOWN_CONTINUE_PERSISTENT_SERVER; not when it is
disabled, draining, or no longer in the pool).
"""
from __future__ import annotations

import abc
import base64
import binascii
import hashlib
import os
import socket
import struct
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vantage.model.applicationpersistenceprofile import ApplicationPersistenceProfile
from vantage.proxy.backend import Server

#: default bound of the client IP and learned header tables
MAX_ENTRIES = 100_000
#: how long learned header-value entries last when the profile gives no timeout, seconds
HEADER_TIMEOUT = 20 * 60.0

PICK_NEW = "HM_DOWN_PICK_NEW_SERVER"
ABORT = "HM_DOWN_ABORT_CONNECTION"
CONTINUE = "HM_DOWN_CONTINUE_PERSISTENT_SERVER"

_COOKIE_VERSION = 1
_NONCE = 12
_TAG = 16
# a set-cookie value is reused for this long before a fresh one (new nonce, new issue time)
_COOKIE_REUSE = 60.0
_DECODED_CACHE = 4096


class PersistentServerDown(Exception):
    """The client's persistent server is down and the profile says HM_DOWN_ABORT_CONNECTION:
    answer the request with an error (503) instead of choosing another server."""

    def __init__(self, server: Server) -> None:
        super().__init__(f"persistent server {server.key} of pool {server.pool_name} is not "
                         "available (server_hm_down_recovery HM_DOWN_ABORT_CONNECTION)")
        self.server = server


class Persistence(abc.ABC):
    """Where a pool's returning clients go. One instance per pool; not shared between pools."""

    #: the Avi `persistence_type` implemented
    persistence_type: str
    #: lower-case name of the request header whose value the caller passes as `header_value`
    #: (None: no header is needed)
    request_header: bytes | None = None
    #: True when the caller passes the Cookie header and adds set_cookie_header() to responses
    inserts_cookie = False
    #: with inserts_cookie: send the cookie on every response, not only when the client had none
    always_send_cookie = False

    def __init__(self, profile: ApplicationPersistenceProfile) -> None:
        self.profile_name = profile.name
        self.recovery = profile.server_hm_down_recovery

    @abc.abstractmethod
    def server_for(self, client_ip: str, cookie: bytes | None, header_value: bytes | None,
                   servers: Sequence[Server], now: float) -> Server | None:
        """The server this request persists to, or None to balance it normally.

        `cookie`: the request's Cookie header value (fields joined with "; "), or None;
        `header_value`: the value of `request_header`, or None; `servers`: the pool's servers;
        `now`: wall-clock seconds (time.time()). A server is returned only when it is still in
        `servers` and available, or per `server_hm_down_recovery`. Raises PersistentServerDown
        for HM_DOWN_ABORT_CONNECTION. Never raises on malformed input.
        """

    def remember(self, client_ip: str, server: Server, now: float,
                 header_value: bytes | None = None) -> None:
        """Record that this client's request went to `server` (call it for every request
        balanced or persisted, once the server is chosen). A no-op for cookies."""

    def set_cookie_header(self, server: Server, now: float) -> bytes:
        """The value of a Set-Cookie field naming `server` (cookie persistence only)."""
        raise TypeError(f"{self.persistence_type} inserts no cookie")

    def expire(self, now: float) -> int:
        """Drop entries idle past their timeout (optional housekeeping; lookups ignore expired
        entries anyway). Returns how many were dropped."""
        return 0

    def __len__(self) -> int:
        return 0

    def _usable(self, server_key: str, servers: Sequence[Server]) -> Server | None:
        for server in servers:
            if server.key == server_key:
                break
        else:
            return None  # no longer in the pool: balance anew
        if server.available:
            return server
        if server.enabled and not server.draining:  # down by its health verdict
            if self.recovery == CONTINUE:
                return server
            if self.recovery == ABORT:
                raise PersistentServerDown(server)
        return None  # disabled or draining by the operator: balance anew


class _Table:
    """key -> [server key, expiry], least recently used first, bounded."""

    __slots__ = ("entries", "max_entries", "timeout")

    def __init__(self, timeout: float, max_entries: int) -> None:
        self.entries: OrderedDict[object, list] = OrderedDict()
        self.timeout = timeout
        self.max_entries = max_entries

    def get(self, key: object, now: float) -> str | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            del self.entries[key]
            return None
        return entry[0]

    def put(self, key: object, server_key: str, now: float) -> None:
        entries = self.entries
        entry = entries.get(key)
        if entry is not None:
            entry[0] = server_key
            entry[1] = now + self.timeout
            entries.move_to_end(key)
            return
        entries[key] = [server_key, now + self.timeout]
        if len(entries) > self.max_entries:
            entries.popitem(last=False)

    def expire(self, now: float) -> int:
        # entries are in order of last use and all share one timeout: expired ones lead
        entries = self.entries
        dropped = 0
        while entries:
            key, entry = next(iter(entries.items()))
            if entry[1] > now:
                break
            del entries[key]
            dropped += 1
        return dropped


class ClientIpPersistence(Persistence):
    persistence_type = "PERSISTENCE_TYPE_CLIENT_IP_ADDRESS"

    def __init__(self, profile: ApplicationPersistenceProfile,
                 max_entries: int = MAX_ENTRIES) -> None:
        super().__init__(profile)
        ip_profile = profile.ip_persistence_profile
        self.table = _Table(ip_profile.ip_persistent_timeout * 60.0, max_entries)
        mask = ip_profile.ip_mask
        self.mask = mask
        if mask is not None:
            self._v4 = ((1 << 32) - 1) ^ ((1 << (32 - min(mask, 32))) - 1)
            self._v6 = ((1 << 128) - 1) ^ ((1 << (128 - mask)) - 1)

    def _key(self, client_ip: str) -> object:
        if self.mask is None:
            return client_ip
        try:
            if ":" in client_ip:
                value = int.from_bytes(socket.inet_pton(socket.AF_INET6,
                                                        client_ip.partition("%")[0]), "big")
                if value >> 32 != 0xFFFF:
                    return (6, value & self._v6)
                value &= 0xFFFFFFFF  # IPv4-mapped: persist as the IPv4 client it is
            else:
                value = int.from_bytes(socket.inet_aton(client_ip), "big")
        except OSError:
            return client_ip
        return (4, value & self._v4)

    def server_for(self, client_ip, cookie, header_value, servers, now):
        server_key = self.table.get(self._key(client_ip), now)
        if server_key is None:
            return None
        return self._usable(server_key, servers)

    def remember(self, client_ip, server, now, header_value=None):
        self.table.put(self._key(client_ip), server.key, now)

    def expire(self, now):
        return self.table.expire(now)

    def __len__(self):
        return len(self.table.entries)


class HeaderPersistence(Persistence):
    persistence_type = "PERSISTENCE_TYPE_CUSTOM_HTTP_HEADER"

    def __init__(self, profile: ApplicationPersistenceProfile,
                 server_values: Mapping[str, str] | None = None,
                 max_entries: int = MAX_ENTRIES, timeout: float = HEADER_TIMEOUT) -> None:
        """`server_values`: server key ("ip:port") -> its `prst_hdr_val`."""
        super().__init__(profile)
        name = profile.hdr_persistence_profile.prst_hdr_name
        self.request_header = name.lower().encode("latin-1")
        self.static = {value.encode("utf-8"): key for key, value in (server_values or {}).items()
                       if value}
        self.table = None if self.static else _Table(timeout, max_entries)

    def server_for(self, client_ip, cookie, header_value, servers, now):
        if not header_value:
            return None
        if self.table is None:
            server_key = self.static.get(header_value)
        else:
            server_key = self.table.get(header_value, now)
        if server_key is None:
            return None
        return self._usable(server_key, servers)

    def remember(self, client_ip, server, now, header_value=None):
        if self.table is not None and header_value:
            self.table.put(header_value, server.key, now)

    def expire(self, now):
        return self.table.expire(now) if self.table is not None else 0

    def __len__(self):
        return len(self.table.entries) if self.table is not None else len(self.static)


class CookiePersistence(Persistence):
    """Cookie value: base64url(key id (1) | nonce (12) | AES-GCM(version (1) | issued (4, Unix
    seconds) | server key) | tag (16)), with the cookie name as associated data, so a value is
    only accepted under the name it was issued for."""

    persistence_type = "PERSISTENCE_TYPE_HTTP_COOKIE"
    inserts_cookie = True
    request_header = b"cookie"

    def __init__(self, profile: ApplicationPersistenceProfile, keys: Sequence[bytes],
                 cookie_name: str | None = None) -> None:
        """`keys`: AES keys (16, 24 or 32 bytes) of this SE; the first encrypts, every one
        decrypts (rotation: put the new key first, keep the old one until its cookies age out).
        `cookie_name` overrides the profile's (default: derived from the profile's name)."""
        super().__init__(profile)
        if not keys:
            raise ValueError(f"applicationpersistenceprofile {profile.name!r}: cookie "
                             "persistence needs an encryption key")
        self._ciphers: dict[int, AESGCM] = {}
        for i, key in enumerate(keys):
            if not isinstance(key, bytes) or len(key) not in (16, 24, 32):
                raise ValueError(f"cookie persistence key {i}: an AES key is 16, 24 or 32 bytes")
            key_id = hashlib.sha256(key).digest()[0]
            if key_id in self._ciphers:
                raise ValueError(f"cookie persistence key {i}: repeats an earlier key (or its "
                                 "1-byte id; generate another)")
            self._ciphers[key_id] = AESGCM(key)
        self._key_id = hashlib.sha256(keys[0]).digest()[0]
        cookie = profile.http_cookie_persistence_profile
        name = cookie_name or cookie.cookie_name or (
            "V" + hashlib.sha256(profile.name.encode()).hexdigest()[:8].upper())
        self.cookie_name = name.encode("latin-1")
        self._prefix = self.cookie_name + b"="
        self.always_send_cookie = cookie.always_send_cookie
        timeout = cookie.timeout or 0
        #: seconds a cookie is honoured after it was issued (0: no limit)
        self.max_age = timeout * 60 if cookie.is_persistent_cookie else 0
        attributes = b"; Path=/"
        if self.max_age:
            attributes += b"; Max-Age=%d" % self.max_age
        if cookie.http_only:
            attributes += b"; HttpOnly"
        self._attributes = attributes
        self._issued: dict[str, tuple[float, bytes]] = {}
        self._decoded: dict[bytes, tuple[str, int]] = {}

    def server_for(self, client_ip, cookie, header_value, servers, now):
        if not cookie:
            return None
        value = self._find(cookie)
        if value is None:
            return None
        found = self._decoded.get(value)
        if found is None:
            found = self._open(value)
            if found is None:
                return None  # tampered or foreign: balance anew
            if len(self._decoded) >= _DECODED_CACHE:
                self._decoded.clear()
            self._decoded[value] = found
        server_key, issued = found
        if self.max_age and now - issued > self.max_age:
            return None
        return self._usable(server_key, servers)

    def set_cookie_header(self, server, now):
        cached = self._issued.get(server.key)
        if cached is not None and now - cached[0] < _COOKIE_REUSE:
            return cached[1]
        plain = struct.pack("!BI", _COOKIE_VERSION, int(now) & 0xFFFFFFFF) + server.key.encode()
        nonce = os.urandom(_NONCE)
        sealed = self._ciphers[self._key_id].encrypt(nonce, plain, self.cookie_name)
        value = base64.urlsafe_b64encode(bytes((self._key_id,)) + nonce + sealed).rstrip(b"=")
        header = self._prefix + value + self._attributes
        self._issued[server.key] = (now, header)
        return header

    def _find(self, cookie: bytes) -> bytes | None:
        """Our cookie's value in a Cookie header (RFC 6265 §4.2.1: `name=value; name=value`)."""
        prefix = self._prefix
        start = cookie.find(prefix)
        while start != -1:
            if start == 0 or cookie[start - 1:start] in (b" ", b";"):
                end = cookie.find(b";", start)
                return cookie[start + len(prefix):end if end != -1 else len(cookie)].strip()
            start = cookie.find(prefix, start + 1)
        return None

    def _open(self, value: bytes) -> tuple[str, int] | None:
        try:
            raw = base64.urlsafe_b64decode(value + b"=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) < 1 + _NONCE + _TAG + 5:
            return None
        cipher = self._ciphers.get(raw[0])
        if cipher is None:
            return None
        try:
            plain = cipher.decrypt(raw[1:1 + _NONCE], raw[1 + _NONCE:], self.cookie_name)
        except InvalidTag:
            return None
        version, issued = struct.unpack_from("!BI", plain)
        if version != _COOKIE_VERSION:
            return None
        try:
            return plain[5:].decode(), issued
        except UnicodeDecodeError:
            return None


def make_persistence(profile: ApplicationPersistenceProfile, *,
                     cookie_keys: Sequence[bytes] = (), cookie_name: str | None = None,
                     server_values: Mapping[str, str] | None = None,
                     max_entries: int = MAX_ENTRIES) -> Persistence:
    """The Persistence a pool with `profile` uses.

    `cookie_keys`: the SE's AES keys for cookie persistence (see CookiePersistence);
    `server_values`: server key -> `prst_hdr_val` of the pool's servers, for custom header
    persistence; `max_entries` bounds client IP and learned header tables.
    Raises ValueError naming the profile for types this SE does not implement.
    """
    kind = profile.persistence_type
    if kind in ("PERSISTENCE_TYPE_CLIENT_IP_ADDRESS", "PERSISTENCE_TYPE_CLIENT_IPV6_ADDRESS"):
        return ClientIpPersistence(profile, max_entries)
    if kind == "PERSISTENCE_TYPE_HTTP_COOKIE":
        return CookiePersistence(profile, cookie_keys, cookie_name)
    if kind == "PERSISTENCE_TYPE_CUSTOM_HTTP_HEADER":
        return HeaderPersistence(profile, server_values, max_entries)
    raise ValueError(f"applicationpersistenceprofile {profile.name!r}: persistence_type {kind} "
                     "is not supported by this SE; use PERSISTENCE_TYPE_CLIENT_IP_ADDRESS, "
                     "PERSISTENCE_TYPE_HTTP_COOKIE or PERSISTENCE_TYPE_CUSTOM_HTTP_HEADER")
