"""Request and connection logs: one JSON line per request (L7) or connection (L4).

Records are appended to an in-memory batch and written once per flush interval (or when the
batch is large), so the per-request cost is one `json.dumps` and a list append.
"""
from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import IO, Any

import orjson

_dumps = orjson.dumps


class RequestLog:
    """Writes records as JSON lines to a stream; also hands each batch to subscribers
    (the SE agent ships them to the controller)."""

    def __init__(self, stream: IO[bytes] | None = None, *, flush_interval: float = 0.5,
                 max_batch: int = 512) -> None:
        self._stream = stream
        self._batch: list[bytes] = []
        self._records: list[dict[str, Any]] = []
        self._flush_interval = flush_interval
        self._max_batch = max_batch
        self._timer: asyncio.TimerHandle | None = None
        self.subscribers: list[Callable[[list[dict[str, Any]]], None]] = []
        self.written = 0

    @classmethod
    def open(cls, target: str | None) -> RequestLog:
        """`-` for standard output, a path to append to, or None to keep no file."""
        if target is None:
            return cls(None)
        if target == "-":
            return cls(sys.stdout.buffer)
        return cls(open(target, "ab", buffering=1 << 16))

    def emit(self, record: dict[str, Any]) -> None:
        if self.subscribers:
            self._records.append(record)
        if self._stream is not None:
            self._batch.append(_dumps(record))
        self._after_emit()

    def write(self, record: dict[str, Any]) -> None:
        """`emit` for a record the caller refills for its next one (the per-request path):
        serialized now, and copied for the subscribers."""
        batch = self._batch
        if self._stream is not None:
            batch.append(_dumps(record))
        if self.subscribers:
            self._records.append(record.copy())
        if len(batch) >= self._max_batch or len(self._records) >= self._max_batch:
            self.flush()
        elif self._timer is None:
            self._after_emit()

    def _after_emit(self) -> None:
        if len(self._batch) >= self._max_batch or len(self._records) >= self._max_batch:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(self._flush_interval, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._batch and self._stream is not None:
            self._batch.append(b"")
            self._stream.write(b"\n".join(self._batch))
            self._stream.flush()
            self.written += len(self._batch) - 1
            self._batch = []
        if self._records:
            records, self._records = self._records, []
            for subscriber in self.subscribers:
                subscriber(records)

    def close(self) -> None:
        self.flush()
        if self._stream is not None and self._stream not in (sys.stdout.buffer, sys.stderr.buffer):
            self._stream.close()


_second = [-1.0, ""]


def iso_time(epoch: float) -> str:
    """ISO-8601 UTC with microseconds, the `time` field of every record."""
    whole = epoch // 1
    if whole != _second[0]:
        _second[0] = whole
        _second[1] = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(whole))
    # % formats the float's microseconds without a call to int() (cheaper than an f-string)
    return "%s%06dZ" % (_second[1], (epoch - whole) * 1e6)  # noqa: UP031
