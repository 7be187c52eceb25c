"""Coarse deadlines for many connections with one periodic timer.

Setting a deadline is one attribute write; a sweep every `interval` seconds fires the expired
ones. A `call_later` per request would cost a heap insertion and a cancel on the hot path, and
timeouts need no sub-second precision.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol


class HasDeadline(Protocol):
    #: two independent deadlines (monotonic loop time, 0.0 = none), e.g. client and server side
    deadline: float
    server_deadline: float

    def on_deadline(self, now: float) -> None: ...


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
        now = self._loop.time()
        expired = [m for m in self._members
                   if 0.0 < m.deadline <= now or 0.0 < m.server_deadline <= now]
        for member in expired:
            member.on_deadline(now)
        for task in self.periodic:
            task(now)
        self._handle = self._loop.call_later(self._interval, self._sweep)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
