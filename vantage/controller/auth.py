"""Authentication: password logins with sessions, API tokens, login rate limits, and the
resolution of who is calling in which tenant with which privileges.

Passwords are hashed with scrypt; session cookies and API tokens are random and only their
SHA-256 is stored, so a copy of the database logs nobody in.
"""
from __future__ import annotations

import base64
import collections
import dataclasses
import hashlib
import hmac
import secrets
import threading
import time
from typing import Any

from vantage.controller.caller import Caller
from vantage.controller.errors import (
    Forbidden,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    TooManyRequests,
)
from vantage.controller.objects import ObjectService, new_uuid
from vantage.controller.rbac import merge_privileges, roles_in_tenant
from vantage.db.store import StoredObject, Transaction

SESSION_COOKIE = "sessionid"
CSRF_COOKIE = "csrftoken"
TOKEN_PREFIX = "vt_"


def hash_password(password: str, *, n: int = 2 ** 14) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=8, p=1, dklen=32,
                            maxmem=256 * 1024 * 1024)
    b64 = base64.urlsafe_b64encode
    return f"scrypt${n}$8$1${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.urlsafe_b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.urlsafe_b64decode(salt),
                                n=int(n), r=int(r), p=int(p), dklen=len(expected),
                                maxmem=256 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# A hash to verify against when the user does not exist, so that the answer takes as long.
_DUMMY_HASH = hash_password("not-a-password", n=2 ** 10)


@dataclasses.dataclass(frozen=True)
class AuthSettings:
    session_idle_timeout: float = 1800
    session_max_age: float = 86400
    token_default_lifetime: float = 0
    max_failures_per_user: int = 5
    max_failures_per_client: int = 20
    failure_window: float = 300

    @classmethod
    def from_conf(cls, conf) -> AuthSettings:
        a = conf.auth
        return cls(session_idle_timeout=a.session_idle_timeout,
                   session_max_age=a.session_max_age,
                   token_default_lifetime=a.token_default_lifetime,
                   max_failures_per_user=a.login_max_failures_per_user,
                   max_failures_per_client=a.login_max_failures_per_client,
                   failure_window=a.login_failure_window)


@dataclasses.dataclass(frozen=True)
class Session:
    session_id: str
    """The cookie value (only its digest is stored)."""
    csrf_token: str


@dataclasses.dataclass(frozen=True)
class Identity:
    caller: Caller
    csrf_token: str | None = None
    """The session's CSRF token (cookie logins only: writes must echo it)."""


@dataclasses.dataclass(frozen=True)
class _Credential:
    """A session or token as the store last described it."""

    user_uuid: str
    csrf: str | None
    token_uuid: str | None
    created: float
    last_seen: float
    expires: float | None
    generation: int
    fetched: float


class LoginRateLimiter:
    """Counts failed logins per username and per client address over a sliding window."""

    def __init__(self, settings: AuthSettings, clock=time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._by_user: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._by_client: dict[str, collections.deque] = collections.defaultdict(collections.deque)

    def _prune(self, q: collections.deque, now: float) -> None:
        while q and q[0] <= now - self._settings.failure_window:
            q.popleft()

    def check(self, username: str, client: str | None) -> None:
        now = self._clock()
        with self._lock:
            for table, key, limit, what in (
                    (self._by_user, username, self._settings.max_failures_per_user,
                     f"user '{username}'"),
                    (self._by_client, client, self._settings.max_failures_per_client,
                     f"client {client}")):
                if key is None or key not in table:
                    continue
                q = table[key]
                self._prune(q, now)
                if len(q) >= limit:
                    retry = int(q[0] + self._settings.failure_window - now) + 1
                    raise TooManyRequests(f"too many failed logins for {what}; try again in "
                                          f"{retry} s", retry_after=retry)
                if not q:
                    del table[key]

    def failed(self, username: str, client: str | None) -> None:
        now = self._clock()
        with self._lock:
            self._by_user[username].append(now)
            if client is not None:
                self._by_client[client].append(now)

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._by_user.pop(username, None)


class AuthService:
    def __init__(self, objects: ObjectService, settings: AuthSettings, clock=time.time) -> None:
        self.objects = objects
        self.store = objects.store
        self.settings = settings
        self.clock = clock
        self.limiter = LoginRateLimiter(settings)
        #: (user, tenant name, tenant uuid) -> (auth generation, expiry, Caller): who a user is
        #: in a tenant changes only with writes to users, roles and tenants
        self._callers: dict[tuple, tuple[int, float, Caller]] = {}
        #: ("s"|"t", digest) -> what the store said about a session or token, for a moment
        self._credentials: dict[tuple[str, str], _Credential] = {}

    # -- login and logout ---------------------------------------------------------------------

    def login(self, username: Any, password: Any = None, token: Any = None,
              client: str | None = None) -> tuple[Session, dict[str, Any]]:
        """Check the credentials and open a session. Returns the session and the user as the
        login answer shows it. Raises NotAuthenticated (wrong credentials) or TooManyRequests."""
        if not isinstance(username, str) or not username:
            raise InvalidInput("username: required")
        if (password is None) == (token is None):
            raise InvalidInput("give password or token")
        secret = password if password is not None else token
        if not isinstance(secret, str):
            raise InvalidInput(f"{'password' if password is not None else 'token'}: must be a "
                               "string")
        self.limiter.check(username, client)
        with self.store.begin() as tx:
            user = tx.find("user", username, [self.objects.admin_tenant])
            user = user[0] if user else None
            stored_hash = None
            if user is not None and password is not None:
                stored_hash = self.objects.decrypted_secrets(user).get("password")
            token_row = tx.find_token(_digest(token)) if token is not None else None
        if password is not None:
            ok = verify_password(password, stored_hash or _DUMMY_HASH) and stored_hash is not None
        else:
            ok = (token_row is not None and user is not None
                  and token_row["user_uuid"] == user.uuid and self._token_live(token_row))
        if not ok or user is None or not user.body.get("is_active", True):
            self.limiter.failed(username, client)
            with self.store.begin(write=True) as tx:
                tx.add_audit(action="LOGIN_FAILED", username=username, tenant=None,
                             client=client)
            raise NotAuthenticated("invalid username or password")
        self.limiter.succeeded(username)
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32))
        now = self.clock()
        with self.store.begin(write=True) as tx:
            tx.add_session(_digest(session.session_id), user.uuid, session.csrf_token, client, now)
            tx.delete_sessions(idle_before=now - self.settings.session_idle_timeout,
                               created_before=now - self.settings.session_max_age)
            tx.add_audit(action="LOGIN", username=username, tenant=None, kind="user",
                         obj_uuid=user.uuid, obj_name=user.name, client=client)
        info = {"uuid": user.uuid, "username": user.name,
                "full_name": user.body.get("full_name"),
                "is_superuser": bool(user.body.get("is_superuser"))}
        return session, info

    def logout(self, caller: Caller) -> None:
        if caller.session_id:
            self._credentials.pop(("s", caller.session_id), None)
        with self.store.begin(write=True) as tx:
            if caller.session_id:
                tx.delete_session(caller.session_id)
            tx.add_audit(action="LOGOUT", username=caller.username, tenant=None,
                         client=caller.client)

    # -- identifying a request ----------------------------------------------------------------

    def identify_from_memory(self, *, session_id: str | None = None, token: str | None = None,
                             tenant_name: str | None = None, tenant_uuid: str | None = None,
                             client: str | None = None) -> Identity | None:
        """What `identify` would answer, from what it saw in the last seconds; None when it
        has to ask the store (then call `identify`). Needs no database, so the API can call it
        without a worker thread."""
        if token is not None:
            key = ("t", _digest(token))
        elif session_id is not None:
            key = ("s", _digest(session_id))
        else:
            return None
        now = self.clock()
        generation = self.objects.auth_generation
        cred = self._credentials.get(key)
        if (cred is None or cred.generation != generation or now - cred.fetched > 2.0
                or not self._fresh(cred, now)):
            return None
        hit = self._callers.get((cred.user_uuid, tenant_name, tenant_uuid))
        if hit is None or hit[0] != generation or hit[1] <= now:
            return None
        caller = dataclasses.replace(hit[2], client=client, token_uuid=cred.token_uuid,
                                     session_id=key[1] if key[0] == "s" else None)
        return Identity(caller, cred.csrf)

    def _fresh(self, cred: _Credential, now: float) -> bool:
        """Valid, and not yet due for a last-seen update in the store."""
        if cred.token_uuid is not None:
            return (cred.expires is None or cred.expires > now) and now - cred.last_seen <= 60
        return (now - cred.created <= self.settings.session_max_age
                and now - cred.last_seen <= min(60.0, self.settings.session_idle_timeout / 10))

    def identify(self, *, session_id: str | None = None, token: str | None = None,
                 tenant_name: str | None = None, tenant_uuid: str | None = None,
                 client: str | None = None) -> Identity:
        """The caller behind a session cookie or an API token, in the tenant the request names
        (X-Avi-Tenant / X-Avi-Tenant-UUID) or the user's default tenant."""
        now = self.clock()
        generation = self.objects.auth_generation
        with self.store.begin() as tx:
            if token is not None:
                key = ("t", _digest(token))
                row = tx.find_token(key[1])
                if row is None or not self._token_live(row):
                    raise NotAuthenticated("the API token is invalid, expired or revoked")
                cred = _Credential(row["user_uuid"], None, row["uuid"], row["created"],
                                   row["last_used"] or 0.0, row["expires"], generation, now)
            elif session_id is not None:
                key = ("s", _digest(session_id))
                row = tx.get_session(key[1])
                if row is None:
                    raise NotAuthenticated("not logged in, or the session ended; log in again")
                if (now - row["last_seen"] > self.settings.session_idle_timeout
                        or now - row["created"] > self.settings.session_max_age):
                    raise NotAuthenticated("the session expired; log in again")
                cred = _Credential(row["user_uuid"], row["csrf_token"], None, row["created"],
                                   row["last_seen"], None, generation, now)
            else:
                raise NotAuthenticated("authentication required: log in (POST /login) or send "
                                       "an API token (Authorization: Bearer ...)")
            caller = self._cached_caller(tx, cred.user_uuid, tenant_name, tenant_uuid, now)
        caller = dataclasses.replace(caller, client=client, token_uuid=cred.token_uuid,
                                     session_id=key[1] if key[0] == "s" else None)
        if not self._fresh(cred, now):
            with self.store.begin(write=True) as tx:
                if cred.token_uuid:
                    tx.touch_token(cred.token_uuid, now)
                else:
                    tx.touch_session(key[1], now)
            cred = dataclasses.replace(cred, last_seen=now)
        if len(self._credentials) > 10_000:
            self._credentials.clear()
        self._credentials[key] = cred
        return Identity(caller, cred.csrf)

    def _cached_caller(self, tx: Transaction, user_uuid: str, tenant_name: str | None,
                       tenant_uuid: str | None, now: float) -> Caller:
        key = (user_uuid, tenant_name, tenant_uuid)
        generation = self.objects.auth_generation
        hit = self._callers.get(key)
        if hit is not None and hit[0] == generation and hit[1] > now:
            return hit[2]
        user = tx.get(user_uuid)
        if user is None or user.kind != "user" or not user.body.get("is_active", True):
            raise NotAuthenticated("the user of this session no longer exists or is disabled")
        caller = self._caller(tx, user, tenant_name, tenant_uuid)
        if len(self._callers) > 10_000:
            self._callers.clear()
        # Other controller processes change users too: trust the cache for a few seconds only.
        self._callers[key] = (generation, now + 5.0, caller)
        return caller

    def _caller(self, tx: Transaction, user: StoredObject, tenant_name: str | None,
                tenant_uuid: str | None) -> Caller:
        body = user.body
        superuser = bool(body.get("is_superuser"))
        admin = self.objects.admin_tenant
        if tenant_uuid:
            tenant = tx.get(tenant_uuid)
            asked = tenant_uuid
        elif tenant_name:
            found = tx.find("tenant", tenant_name, [admin])
            tenant = found[0] if found else None
            asked = tenant_name
        else:
            default = body.get("default_tenant_ref")
            if default is None and not superuser:
                entries = body.get("access", [])
                admin_entry = any(e.get("all_tenants") or e.get("tenant_ref") == admin
                                  for e in entries)
                default = admin if admin_entry or not entries else entries[0].get("tenant_ref")
            tenant = tx.get(default or admin)
            asked = default or "admin"
        if tenant is None or tenant.kind != "tenant":
            raise Forbidden(f"tenant '{asked}' does not exist or user '{user.name}' has no "
                            "access to it")
        privileges: dict[str, str] = {}
        if not superuser:
            role_uuids = roles_in_tenant(body, tenant.uuid)
            if role_uuids is None:
                raise Forbidden(f"tenant '{asked}' does not exist or user '{user.name}' has no "
                                "access to it")
            roles = tx.get_many(role_uuids)
            privileges = merge_privileges([r.body for r in roles.values()])
        return Caller(user_uuid=user.uuid, username=user.name, tenant=tenant.uuid,
                      tenant_name=tenant.name, privileges=privileges, superuser=superuser)

    def _token_live(self, row: dict[str, Any]) -> bool:
        return row["expires"] is None or row["expires"] > self.clock()

    # -- API tokens ---------------------------------------------------------------------------

    def create_token(self, caller: Caller, name: Any = None,
                     expires_in: Any = None) -> dict[str, Any]:
        """A new API token for the calling user. The token text is in this answer only."""
        if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= 256):
            raise InvalidInput("name: must be a string of 1 to 256 characters")
        if expires_in is not None and (isinstance(expires_in, bool)
                                       or not isinstance(expires_in, int)
                                       or not 60 <= expires_in <= 10 * 365 * 86400):
            raise InvalidInput("expires_in: must be a number of seconds from 60 to 315360000")
        lifetime = expires_in if expires_in is not None else (
            self.settings.token_default_lifetime or None)
        now = self.clock()
        text = TOKEN_PREFIX + secrets.token_urlsafe(32)
        uuid = new_uuid("usertoken")
        with self.store.begin(write=True) as tx:
            row = tx.add_token(uuid, _digest(text), caller.user_uuid,
                               name or f"token-{uuid[-8:]}", now,
                               now + lifetime if lifetime else None)
            tx.add_audit(action="TOKEN_CREATE", username=caller.username, tenant=None,
                         kind="usertoken", obj_uuid=uuid, obj_name=row["name"],
                         client=caller.client)
        return {**self._token_view(row, caller.username), "token": text}

    def list_tokens(self, caller: Caller) -> list[dict[str, Any]]:
        """The caller's own tokens; a superuser sees everyone's."""
        with self.store.begin() as tx:
            rows = tx.list_tokens(None if caller.superuser else caller.user_uuid)
            names = tx.names({r["user_uuid"] for r in rows})
        return [self._token_view(r, names.get(r["user_uuid"])) for r in rows]

    def revoke_token(self, caller: Caller, uuid: str) -> None:
        with self.store.begin(write=True) as tx:
            row = tx.get_token(uuid)
            if row is None or (row["user_uuid"] != caller.user_uuid and not caller.superuser):
                raise NotFound(f"usertoken {uuid} not found")
            tx.delete_token(uuid)
            self._credentials.pop(("t", row["token_hash"]), None)
            tx.add_audit(action="TOKEN_REVOKE", username=caller.username, tenant=None,
                         kind="usertoken", obj_uuid=uuid, obj_name=row["name"],
                         client=caller.client)

    @staticmethod
    def _token_view(row: dict[str, Any], username: str | None) -> dict[str, Any]:
        def iso(ts):
            return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
        return {"uuid": row["uuid"], "name": row["name"], "username": username,
                "created": iso(row["created"]), "expires": iso(row["expires"]),
                "last_used": iso(row["last_used"])}
