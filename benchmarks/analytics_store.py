"""Which embedded store for analytics: SQLite (WAL) or DuckDB, measured on the controller's
own workload: request logs appended in batches (one per SE per second) and queried by virtual
service and time window with a filter, and metric samples summed per step.

    python -m benchmarks.analytics_store [--records 200000] [--no-write]

DuckDB is optional (`pip install duckdb`); without it only SQLite is measured. Results go to
the "Analytics store" section of docs/performance.md.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.docs import replace_section

SCHEMA = ("CREATE TABLE logs (ts DOUBLE, vs TEXT, se TEXT, status INTEGER, client_ip TEXT, "
          "uri TEXT, server TEXT, significant INTEGER, record TEXT)")
INDEX = "CREATE INDEX logs_vs_ts ON logs (vs, ts)"
QUERY = ("SELECT record FROM logs WHERE vs = ? AND ts >= ? AND ts <= ? AND status = ? "
         "ORDER BY ts DESC LIMIT 50")
SERIES = ("SELECT CAST((ts - ?) / 60 AS INTEGER) AS b, count(*), sum(status >= 500) "
          "FROM logs WHERE vs = ? AND ts >= ? GROUP BY b")


def rows(n: int, vss: int, start: float) -> list[tuple]:
    rng = random.Random(7)
    out = []
    for i in range(n):
        vs = f"virtualservice-{i % vss}"
        status = rng.choice((200, 200, 200, 200, 304, 404, 503))
        record = {"time": start + i * 0.01, "vs": vs, "client": f"10.0.{i % 250}.{i % 200}:5000",
                  "method": "GET", "uri": f"/item/{i % 1000}", "status": status,
                  "server": "192.0.2.1:80", "total_time": 0.002, "significant": status >= 400}
        out.append((start + i * 0.01, vs, "se-1", status, "10.0.0.1", record["uri"],
                    "192.0.2.1:80", int(status >= 400), json.dumps(record)))
    return out


def measure(connect, name: str, data: list[tuple], vss: int, batch: int) -> dict:
    db = connect()
    db.execute(SCHEMA)
    db.execute(INDEX)
    t0 = time.perf_counter()
    for i in range(0, len(data), batch):
        db.execute("BEGIN")
        db.executemany("INSERT INTO logs VALUES (?,?,?,?,?,?,?,?,?)", data[i:i + batch])
        db.execute("COMMIT")
    ingest = len(data) / (time.perf_counter() - t0)
    start, end = data[0][0], data[-1][0]
    times = []
    for i in range(200):
        vs = f"virtualservice-{i % vss}"
        t = time.perf_counter()
        db.execute(QUERY, (vs, start, end, 503)).fetchall()
        times.append(time.perf_counter() - t)
    series = []
    for i in range(50):
        t = time.perf_counter()
        db.execute(SERIES, (start, f"virtualservice-{i % vss}", start)).fetchall()
        series.append(time.perf_counter() - t)
    db.close()
    return {"store": name, "ingest": ingest,
            "query_p50": statistics.median(times) * 1000,
            "query_p99": sorted(times)[int(len(times) * 0.99) - 1] * 1000,
            "series_p50": statistics.median(series) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--vss", type=int, default=50)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    data = rows(args.records, args.vss, time.time() - args.records * 0.01)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        def sqlite_connect():
            db = sqlite3.connect(os.path.join(tmp, "a.db"), isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            return db
        results.append(measure(sqlite_connect, "SQLite (WAL)", data, args.vss, args.batch))
        try:
            import duckdb
        except ImportError:
            duckdb = None
        if duckdb is not None:
            results.append(measure(lambda: duckdb.connect(os.path.join(tmp, "a.duckdb")),
                                   f"DuckDB {duckdb.__version__}", data, args.vss, args.batch))
    lines = ["| store | ingest (records/s) | log query p50 (ms) | log query p99 (ms) | "
             "series query p50 (ms) |", "|---|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['store']} | {r['ingest']:,.0f} | {r['query_p50']:.2f} | "
                     f"{r['query_p99']:.2f} | {r['series_p50']:.2f} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        body = (f"`python -m benchmarks.analytics_store --records {args.records}` "
                f"({time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC): {args.records:,} "
                f"request log records over {args.vss} virtual services, appended in "
                f"transactions of {args.batch} (one SE batch), then 200 log queries (one "
                "virtual service, a time window, status = 503, newest 50) and 50 per-minute "
                "series.\n\n" + table + "\n\nThe controller's workload is many small appends and "
                "narrow range scans by virtual service and time, which favours SQLite's B-tree "
                "index; SQLite also needs no extra dependency. The controller uses SQLite (WAL).")
        replace_section(Path(__file__).resolve().parents[1] / "docs" / "performance.md",
                        "Analytics store", body)


if __name__ == "__main__":
    main()
