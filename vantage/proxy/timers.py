"""Coarse deadlines for many connections with one periodic timer.

Setting a deadline is one attribute write; a sweep every `interval` seconds fires the expired
ones. A `call_later` per request would cost a heap insertion and a cancel on the hot path, and
timeouts need no sub-second precision.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol


class HasDeadline(Protocol):
    #: monotonic loop time, 0.0 = none; a member may also have a second, independent
    #: `server_deadline` (the client and server sides of an HTTP exchange)
    deadline: float

    def on_deadline(self, now: float) -> None: ...


LOG = logging.getLogger("vantage.proxy.timers")


class DeadlineSweeper:
    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float = 0.25) -> None:
        self._loop = loop
        self._interval = interval
        self._members: set[HasDeadline] = set()
        self._handle: asyncio.TimerHandle | None = None
        self.periodic: list[Callable[[float], None]] = []

    def add(self, member: HasDeadline) -> None:
        self._members.add(member)
        if self._handle is None:
            self._handle = self._loop.call_later(self._interval, self._sweep)

    def discard(self, member: HasDeadline) -> None:
        self._members.discard(member)

    def __len__(self) -> int:
        return len(self._members)

    def _sweep(self) -> None:
        self._handle = self._loop.call_later(self._interval, self._sweep)
        now = self._loop.time()
        expired = [m for m in self._members
                   if 0.0 < m.deadline <= now or 0.0 < getattr(m, "server_deadline", 0.0) <= now]
        for member in expired:
            try:
                member.on_deadline(now)
            except Exception:  # one faulty member must not stop every other timeout
                LOG.exception("deadline handler of %r failed", member)
        for task in self.periodic:
            try:
                task(now)
            except Exception:
                LOG.exception("periodic task %r failed", task)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
