"""The controller's side of the SE channel: who may connect, what each SE was sent, and which
SEs are alive.

Credentials: an SE created by the controller gets a one-time bootstrap token (stored hashed,
with an expiry). Its first channel message presents the token; the controller answers with the
SE's own secret (stored hashed) and burns the token. A replayed token, a wrong secret, or an SE
naming another SE's identity is refused and logged. Credentials live in a 0600 JSON file in the
state directory, so SEs reconnect after a controller restart without being re-created.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from vantage.controller.scaleout import DataInterface, parse_interfaces

LOG = logging.getLogger("vantage.controller.semanager")


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _object(text: str) -> dict[str, Any]:
    """One channel message: a JSON object, or ValueError (which ends the channel)."""
    message = json.loads(text)
    if not isinstance(message, dict):
        # ValueError like a JSON syntax error: both end the channel the same way
        raise ValueError("an SE channel message must be a JSON object")
    return message


def _reasons(value: Any) -> dict[str, str]:
    """The SE's {virtual service uuid: reason} of what it could not apply."""
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


class SeCredentials:
    def __init__(self, path: str | Path, *, token_ttl: float = 3600.0) -> None:
        self.path = Path(path)
        self.token_ttl = token_ttl
        self._lock = threading.Lock()
        try:
            self._data: dict[str, dict[str, Any]] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self._data = {}

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self._data, f)
        os.replace(tmp, self.path)

    def issue_token(self, se_uuid: str) -> tuple[str, float]:
        token = secrets.token_urlsafe(32)
        expires = time.time() + self.token_ttl
        with self._lock:
            entry = self._data.setdefault(se_uuid, {})
            entry["token"] = _hash(token)
            entry["token_expires"] = expires
            self._save()
        return token, expires

    def redeem_token(self, se_uuid: str, token: str) -> str | None:
        """Exchange a valid bootstrap token for the SE's secret; the token is burnt."""
        with self._lock:
            entry = self._data.get(se_uuid)
            if not entry or not entry.get("token") or not token:
                return None
            if entry.get("token_expires", 0) < time.time():
                return None
            if not hmac.compare_digest(entry["token"], _hash(token)):
                return None
            secret = secrets.token_urlsafe(32)
            entry.pop("token", None)
            entry.pop("token_expires", None)
            entry["secret"] = _hash(secret)
            self._save()
            return secret

    def check_secret(self, se_uuid: str, secret: str) -> bool:
        entry = self._data.get(se_uuid)
        return bool(entry and entry.get("secret") and secret
                    and hmac.compare_digest(entry["secret"], _hash(secret)))

    def has_pending_token(self, se_uuid: str) -> bool:
        entry = self._data.get(se_uuid)
        return bool(entry and entry.get("token") and entry.get("token_expires", 0) > time.time())

    def forget(self, se_uuid: str) -> None:
        with self._lock:
            if self._data.pop(se_uuid, None) is not None:
                self._save()


class Channel(Protocol):
    async def send(self, text: str) -> None: ...
    async def receive(self) -> str: ...
    async def close(self, code: int = 1000) -> None: ...


@dataclasses.dataclass
class SeSession:
    se_uuid: str
    channel: Channel
    peer: str
    connected_at: float
    last_heartbeat: float
    hostname: str | None = None
    pid: int | None = None
    applied_version: str | None = None
    sent_version: str | None = None
    rejected: dict[str, str] = dataclasses.field(default_factory=dict)
    #: virtual service uuid -> why the SE left it out of its applied configuration
    rejected_vs: dict[str, str] = dataclasses.field(default_factory=dict)
    servers: dict[str, list[dict]] = dataclasses.field(default_factory=dict)
    #: the SE's data interfaces (name, MAC, addresses), from its hello and heartbeats
    interfaces: tuple[DataInterface, ...] = ()


class SeManager:
    """Tracks SE channels. `on_message` receives logs/metrics; `on_connect` is called when an SE
    (re)connects so the reconciler can send it its configuration."""

    def __init__(self, credentials: SeCredentials, *, heartbeat_timeout: float = 3.0,
                 known: Callable[[str], bool] | None = None) -> None:
        self.credentials = credentials
        self.heartbeat_timeout = heartbeat_timeout
        self.sessions: dict[str, SeSession] = {}
        #: SE uuid -> monotonic time of its last heartbeat (kept across reconnects)
        self.last_seen: dict[str, float] = {}
        self.known = known or (lambda uuid: True)
        self.on_connect: Callable[[str], Awaitable[None]] | None = None
        self.on_message: Callable[[str, dict[str, Any]], None] | None = None
        self.on_ack: Callable[[str, dict[str, Any]], None] | None = None
        #: called when an SE's channel closes; may call `declare_down` if the SE is gone
        self.on_disconnect: Callable[[str], Awaitable[None]] | None = None
        self.refused = 0

    def is_alive(self, se_uuid: str, now: float | None = None) -> bool:
        """Heartbeats arrived within the timeout. One late heartbeat does not make an SE dead:
        the timeout spans several heartbeat intervals."""
        seen = self.last_seen.get(se_uuid)
        now = time.monotonic() if now is None else now
        return seen is not None and now - seen <= self.heartbeat_timeout

    async def handle(self, channel: Channel, peer: str) -> None:
        """Run one SE channel until it closes."""
        try:
            hello = _object(await asyncio.wait_for(channel.receive(), 10))
        except (TimeoutError, ValueError, ConnectionError):
            await channel.close(1008)
            return
        se_uuid = str(hello.get("se_uuid") or "")
        welcome: dict[str, Any] = {"type": "welcome"}
        if hello.get("type") != "hello" or not se_uuid or not self.known(se_uuid):
            await self._refuse(channel, peer, se_uuid, "unknown SE")
            return
        if hello.get("secret"):
            if not self.credentials.check_secret(se_uuid, hello["secret"]):
                retry = self.credentials.has_pending_token(se_uuid)
                await self._refuse(channel, peer, se_uuid, "bad credentials", retry)
                return
        else:
            secret = self.credentials.redeem_token(se_uuid, str(hello.get("token") or ""))
            if secret is None:
                await self._refuse(channel, peer, se_uuid,
                                   "bootstrap token invalid, expired or already used")
                return
            welcome["secret"] = secret
            LOG.info("SE %s registered from %s", se_uuid, peer)
        old = self.sessions.get(se_uuid)
        if old is not None:
            await old.channel.close(4000)  # a newer channel replaces it
        now = time.monotonic()
        session = SeSession(se_uuid, channel, peer, now, now, hello.get("hostname"),
                            hello.get("pid"), applied_version=hello.get("config_version"),
                            rejected_vs=_reasons(hello.get("rejected")),
                            interfaces=parse_interfaces(hello.get("interfaces")))
        self.sessions[se_uuid] = session
        self.last_seen[se_uuid] = now
        await channel.send(json.dumps(welcome))
        LOG.info("SE %s connected from %s (config %s)", se_uuid, peer, session.applied_version)
        if self.on_connect is not None:
            await self.on_connect(se_uuid)
        try:
            while True:
                text = await channel.receive()
                self._dispatch(session, _object(text))
        except (ConnectionError, ValueError, asyncio.CancelledError):
            pass
        finally:
            if self.sessions.get(se_uuid) is session:
                del self.sessions[se_uuid]
                LOG.info("SE %s channel closed", se_uuid)
                if self.on_disconnect is not None:
                    await self.on_disconnect(se_uuid)

    def declare_down(self, se_uuid: str) -> None:
        """The cloud confirms the SE is gone: do not wait for the heartbeat timeout."""
        self.last_seen.pop(se_uuid, None)

    async def _refuse(self, channel: Channel, peer: str, se_uuid: str, reason: str,
                      retry_with_token: bool = False) -> None:
        self.refused += 1
        LOG.warning("refused SE channel from %s claiming %r: %s", peer, se_uuid or None, reason)
        try:
            await channel.send(json.dumps({"type": "refused", "reason": reason,
                                           "retry_with_token": retry_with_token}))
        finally:
            await channel.close(1008)

    def _dispatch(self, session: SeSession, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "heartbeat":
            session.last_heartbeat = self.last_seen[session.se_uuid] = time.monotonic()
            session.servers = message.get("servers") or {}
            session.applied_version = message.get("version")
            if "interfaces" in message:
                session.interfaces = parse_interfaces(message["interfaces"])
        elif kind == "ack":
            if message.get("ok"):
                session.applied_version = message.get("version")
                session.rejected_vs = _reasons(message.get("rejected"))
            else:
                session.rejected[str(message.get("version"))] = str(message.get("error"))
            if self.on_ack is not None:
                self.on_ack(session.se_uuid, message)
        elif kind in ("logs", "metrics"):
            if self.on_message is not None:
                self.on_message(session.se_uuid, message)
        elif kind == "config_request":
            wanted = message.get("se_uuid")
            if wanted and wanted != session.se_uuid:
                LOG.warning("SE %s asked for the configuration of SE %s: refused",
                            session.se_uuid, wanted)

    async def push(self, se_uuid: str, version: str, document: dict[str, Any]) -> bool:
        """Send a configuration to one SE if it is connected; True if sent."""
        session = self.sessions.get(se_uuid)
        if session is None:
            return False
        session.sent_version = version
        try:
            await session.channel.send(json.dumps({"type": "config", "version": version,
                                                   "config": document}))
        except ConnectionError:
            return False
        return True
