"""Analytics store: request logs and metric samples shipped by SEs, in an embedded SQLite file.

SQLite (WAL) rather than DuckDB: the work is many small appends (one batch per SE per second)
and narrow range scans by virtual service and time, which is SQLite's strength; it is already
part of the controller, and docs/performance.md has the measured ingest and query rates.

Metrics arrive as cumulative counters per SE; the store keeps per-interval deltas, so a query
sums deltas per step across SEs and divides by the step. Retention is bounded both by age and
by row count.
"""
from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable
from typing import Any

LOG = logging.getLogger("vantage.analytics.store")

SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    ts REAL NOT NULL, vs TEXT, se TEXT, status INTEGER, client_ip TEXT, uri TEXT,
    server TEXT, significant INTEGER, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS logs_vs_ts ON logs (vs, ts);
CREATE TABLE IF NOT EXISTS samples (
    ts REAL NOT NULL, kind TEXT NOT NULL, uuid TEXT NOT NULL, se TEXT NOT NULL,
    interval REAL NOT NULL, conns INTEGER, resp_1xx INTEGER, resp_2xx INTEGER,
    resp_3xx INTEGER, resp_4xx INTEGER, resp_5xx INTEGER, bytes_in INTEGER,
    bytes_out INTEGER, latency_sum REAL, latency_count INTEGER, errors INTEGER,
    open_conns INTEGER);
CREATE INDEX IF NOT EXISTS samples_entity_ts ON samples (kind, uuid, ts);
"""

COUNTERS = ("total_conns", "responses", "bytes_in", "bytes_out", "latency_sum",
            "latency_count", "errors")

#: Avi metric ids served, and how each is computed from a step's summed deltas
METRICS = {
    "l4_client.avg_complete_conns": "conns / step",
    "l7_client.avg_complete_responses": "(r1+r2+r3+r4+r5) / step",
    "l7_client.avg_resp_1xx": "r1 / step",
    "l7_client.avg_resp_2xx": "r2 / step",
    "l7_client.avg_resp_3xx": "r3 / step",
    "l7_client.avg_resp_4xx": "r4 / step",
    "l7_client.avg_resp_5xx": "r5 / step",
    "l7_client.avg_total_time": "latency_sum / latency_count * 1000 (ms)",
    "l4_client.avg_bandwidth": "(bytes_in + bytes_out) * 8 / step (bits/s)",
    "l4_client.avg_errored_connections": "errors / step",
    "l4_client.max_open_conns": "max of open connections",
}


class AnalyticsStore:
    def __init__(self, path: str, *, log_retention: float = 7 * 86400,
                 metric_retention: float = 30 * 86400, max_logs: int = 2_000_000) -> None:
        self.path = path
        self.log_retention = log_retention
        self.metric_retention = metric_retention
        self.max_logs = max_logs
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        #: (se, kind, uuid) -> (ts, cumulative counters) of the last sample
        self._last: dict[tuple[str, str, str], tuple[float, dict[str, Any]]] = {}
        self._queue: queue.Queue = queue.Queue(maxsize=10000)
        self.dropped = 0
        self._writer = threading.Thread(target=self._write_loop, name="analytics-writer",
                                        daemon=True)
        self._writer.start()
        self._last_prune = 0.0

    # ingest (called from the controller's event loop: must not block) -------------------

    def ingest(self, se_uuid: str, message: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait((se_uuid, message))
        except queue.Full:
            self.dropped += 1

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._queue.task_done()
                return
            batch = [item]
            stop = False
            while len(batch) < 200:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            try:
                self._write(batch)
            except Exception:  # the writer must outlive any one batch (disk full, locked db)
                LOG.exception("analytics batch of %d message(s) not written", len(batch))
            finally:
                for _ in range(len(batch) + stop):
                    self._queue.task_done()
            if stop:
                return

    def _write(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        logs, samples = [], []
        for se_uuid, message in batch:
            # what an SE sends is input: a malformed message or record is skipped, not fatal
            try:
                if message.get("type") == "logs":
                    for record in message.get("records") or []:
                        try:
                            logs.append(_log_row(se_uuid, record))
                        except (AttributeError, TypeError, ValueError):
                            LOG.warning("SE %s: malformed request log record skipped", se_uuid)
                elif message.get("type") == "metrics":
                    samples.extend(list(self._deltas(se_uuid, message)))
            except (AttributeError, TypeError, ValueError) as exc:
                LOG.warning("SE %s: malformed %s message skipped: %s", se_uuid,
                            message.get("type"), exc)
        with self._lock:
            self._db.execute("BEGIN")
            try:
                if logs:
                    self._db.executemany("INSERT INTO logs VALUES (?,?,?,?,?,?,?,?,?)", logs)
                if samples:
                    self._db.executemany(
                        "INSERT INTO samples VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        samples)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        now = time.time()
        if now - self._last_prune > 60:
            self._last_prune = now
            self.prune(now)

    def _deltas(self, se_uuid: str, message: dict[str, Any]) -> Iterable[tuple]:
        ts = float(message.get("ts") or time.time())
        entities = [("virtualservice", uuid, c) for uuid, c in
                    (message.get("virtualservices") or {}).items()]
        entities += [("pool", uuid, c) for uuid, c in (message.get("pools") or {}).items()]
        totals = {k: 0 for k in ("total_conns", "bytes_in", "bytes_out", "latency_sum",
                                 "latency_count", "errors", "open_conns")}
        totals["responses"] = [0] * 6
        for _, _, c in entities[:len(message.get("virtualservices") or {})]:
            for key in totals:
                if key == "responses":
                    totals[key] = [a + b for a, b in zip(totals[key], c.get(key, [0] * 6))]
                else:
                    totals[key] += c.get(key, 0)
        entities.append(("serviceengine", se_uuid, totals))
        se_previous = self._last.get((se_uuid, "serviceengine", se_uuid))
        for kind, uuid, counters in entities:
            key = (se_uuid, kind, uuid)
            previous = self._last.get(key)
            self._last[key] = (ts, counters)
            if previous is None:
                if se_previous is None or kind == "serviceengine":
                    continue  # the first sample of an SE only sets the baseline
                # new on an SE that already reports (a virtual service just placed there):
                # its counters began at zero since that SE's previous sample
                previous = (se_previous[0], {})
            prev_ts, prev = previous
            interval = ts - prev_ts
            if interval <= 0:
                continue
            d = {k: counters.get(k, 0) - prev.get(k, 0) for k in COUNTERS if k != "responses"}
            resp = [a - b for a, b in zip(counters.get("responses", [0] * 6),
                                          prev.get("responses", [0] * 6))]
            if any(v < 0 for v in d.values()) or any(v < 0 for v in resp):
                continue  # the SE restarted: counters began again
            yield (ts, kind, uuid, se_uuid, interval, d["total_conns"], resp[1], resp[2],
                   resp[3], resp[4], resp[5], d["bytes_in"], d["bytes_out"], d["latency_sum"],
                   d["latency_count"], d["errors"], counters.get("open_conns", 0))

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until what was ingested so far is written (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        # unfinished_tasks, not empty(): a batch taken off the queue may still be written
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._lock:
            pass

    def prune(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            self._db.execute("DELETE FROM logs WHERE ts < ?", (now - self.log_retention,))
            self._db.execute("DELETE FROM samples WHERE ts < ?", (now - self.metric_retention,))
            count = self._db.execute("SELECT count(*) FROM logs").fetchone()[0]
            if count > self.max_logs:
                self._db.execute(
                    "DELETE FROM logs WHERE rowid IN (SELECT rowid FROM logs ORDER BY ts "
                    "LIMIT ?)", (count - self.max_logs,))

    def close(self) -> None:
        self._queue.put(None)
        self._writer.join(timeout=5)
        self._db.close()

    # queries ---------------------------------------------------------------------------------

    def logs(self, vs_uuid: str, *, start: float | None = None, end: float | None = None,
             filters: dict[str, Any] | None = None, offset: int = 0,
             limit: int = 50) -> tuple[int, list[dict[str, Any]]]:
        where, params = ["vs = ?"], [vs_uuid]
        if start is not None:
            where.append("ts >= ?")
            params.append(start)
        if end is not None:
            where.append("ts <= ?")
            params.append(end)
        for key, value in (filters or {}).items():
            column = {"status": "status", "client_ip": "client_ip", "uri": "uri",
                      "server": "server", "significant": "significant"}[key]
            where.append(f"{column} = ?")
            params.append(value)
        clause = " AND ".join(where)
        with self._lock:
            count = self._db.execute(f"SELECT count(*) FROM logs WHERE {clause}",
                                     params).fetchone()[0]
            rows = self._db.execute(
                f"SELECT record FROM logs WHERE {clause} ORDER BY ts DESC LIMIT ? OFFSET ?",
                [*params, limit, offset]).fetchall()
        return count, [json.loads(r[0]) for r in rows]

    def series(self, kind: str, uuid: str, metric_ids: list[str], *, step: int, limit: int,
               now: float | None = None) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        end = (now // step) * step + step
        start = end - step * limit
        with self._lock:
            rows = self._db.execute(
                "SELECT CAST((ts - ?) / ? AS INTEGER) AS bucket, sum(conns), sum(resp_1xx), "
                "sum(resp_2xx), sum(resp_3xx), sum(resp_4xx), sum(resp_5xx), sum(bytes_in), "
                "sum(bytes_out), sum(latency_sum), sum(latency_count), sum(errors), "
                "max(open_conns) FROM samples WHERE kind = ? AND uuid = ? AND ts >= ? "
                "AND ts < ? GROUP BY bucket", (start, step, kind, uuid, start, end)).fetchall()
        buckets = {r[0]: r[1:] for r in rows}
        out = []
        for metric in metric_ids:
            data = []
            for index in range(limit):
                b = buckets.get(index)
                ts = start + index * step
                value = _metric(metric, b, step) if b else 0.0
                data.append({"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00",
                                                        time.gmtime(ts + step)),
                             "value": value})
            out.append({"header": {"name": metric, "entity_uuid": uuid,
                                   "statistics": _statistics(data)}, "data": data})
        return out


def _metric(metric: str, b: tuple, step: int) -> float:
    conns, r1, r2, r3, r4, r5, bin_, bout, lsum, lcount, errors, open_max = \
        [v or 0 for v in b]
    if metric == "l4_client.avg_complete_conns":
        return conns / step
    if metric == "l7_client.avg_complete_responses":
        return (r1 + r2 + r3 + r4 + r5) / step
    if metric.startswith("l7_client.avg_resp_"):
        return {"1xx": r1, "2xx": r2, "3xx": r3, "4xx": r4, "5xx": r5}[metric[-3:]] / step
    if metric == "l7_client.avg_total_time":
        return lsum / lcount * 1000 if lcount else 0.0
    if metric == "l4_client.avg_bandwidth":
        return (bin_ + bout) * 8 / step
    if metric == "l4_client.avg_errored_connections":
        return errors / step
    if metric == "l4_client.max_open_conns":
        return float(open_max)
    raise KeyError(metric)


def _statistics(data: list[dict[str, Any]]) -> dict[str, float]:
    values = [d["value"] for d in data]
    return {"min": min(values, default=0), "max": max(values, default=0),
            "mean": sum(values) / len(values) if values else 0}


def _log_row(se_uuid: str, record: dict[str, Any]) -> tuple:
    ts = _parse_time(record.get("time"))
    client = record.get("client") or ""
    client_ip = client.rsplit(":", 1)[0].strip("[]") if client else None
    return (ts, record.get("vs_uuid") or record.get("vs"), se_uuid, record.get("status"),
            client_ip, record.get("uri"), record.get("server"),
            1 if record.get("significant") else 0,
            json.dumps({**record, "se": se_uuid}, separators=(",", ":")))


def _parse_time(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and len(value) >= 19:
        import calendar
        base = calendar.timegm(time.strptime(value[:19], "%Y-%m-%dT%H:%M:%S"))
        frac = value[20:26] if len(value) > 20 and value[19] == "." else "0"
        return base + float("0." + frac)
    return time.time()


def health_score(series_5xx: float, series_total: float, latency_ms: float,
                 ses_up: int, ses_wanted: int) -> dict[str, float]:
    """A 0-100 score from performance (errors, latency), resources (SEs serving vs. wanted)
    and anomaly (error share) components, in the spirit of Avi's health score."""
    error_share = series_5xx / series_total if series_total else 0.0
    performance = max(0.0, 100.0 - min(50.0, latency_ms / 20.0) - error_share * 100.0)
    resources_penalty = 0.0 if ses_wanted == 0 else 50.0 * (1 - ses_up / ses_wanted)
    anomaly_penalty = min(25.0, error_share * 250.0)
    score = max(0.0, min(100.0, performance - resources_penalty - anomaly_penalty))
    if ses_up == 0:
        score = 0.0
    return {"health_score": round(score, 1), "performance_score": round(performance, 1),
            "resources_penalty": round(resources_penalty, 1),
            "anomaly_penalty": round(anomaly_penalty, 1)}
