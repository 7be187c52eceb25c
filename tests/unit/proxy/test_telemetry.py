"""Tests for vantage.proxy.telemetry: JSON lines, records handed to subscribers, the time field."""
from __future__ import annotations

import io
import json
import re

from vantage.proxy.telemetry import RequestLog, iso_time


def test_a_refilled_record_is_written_and_handed_on_as_it_was():
    stream = io.BytesIO()
    log = RequestLog(stream)
    seen = []
    log.subscribers.append(seen.extend)
    record = {"type": "http", "status": 200}
    log.write(record)
    record["status"] = 503  # the caller refills the same dict for its next request
    log.write(record)
    log.emit({"type": "tls", "reason": "handshake"})
    log.flush()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r.get("status") for r in lines] == [200, 503, None]
    assert [r.get("status") for r in seen] == [200, 503, None]
    assert log.written == 3


def test_iso_time_has_microseconds_and_no_rounding_up():
    assert iso_time(1700000000.0) == "2023-11-14T22:13:20.000000Z"
    assert iso_time(1700000000.25) == "2023-11-14T22:13:20.250000Z"
    assert iso_time(1700000000.999999) == "2023-11-14T22:13:20.999999Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", iso_time(1.5e9 + 0.123456))
