"""AnalyticsStore on a real SQLite file: metric deltas from cumulative SE counters (and SE
restarts), the series math of every metric id, request-log filters and paging, retention, and
malformed SE messages."""
from __future__ import annotations

import calendar
import sqlite3
import time

import pytest

from vantage.analytics.store import METRICS, AnalyticsStore, _parse_time, health_score

# recent (older samples fall to the default retention), a multiple of 5, 10, 60 and 300 s
BASE = int(time.time()) // 300 * 300 - 3600
VS = "virtualservice-1"
POOL = "pool-1"
SE_A = "serviceengine-a"
SE_B = "serviceengine-b"


@pytest.fixture
def store(tmp_path):
    s = AnalyticsStore(str(tmp_path / "analytics.db"))
    yield s
    s.close()


def counters(conns=0, responses=(0, 0, 0, 0, 0, 0), bytes_in=0, bytes_out=0, latency_sum=0.0,
             latency_count=0, errors=0, open_conns=0) -> dict:
    return {"total_conns": conns, "responses": list(responses), "bytes_in": bytes_in,
            "bytes_out": bytes_out, "latency_sum": latency_sum, "latency_count": latency_count,
            "errors": errors, "open_conns": open_conns}


def metrics(ts: float, vs: dict | None = None, pool: dict | None = None) -> dict:
    return {"type": "metrics", "ts": ts, "virtualservices": {VS: vs} if vs else {},
            "pools": {POOL: pool} if pool else {}}


def values(store, metric: str, *, kind="virtualservice", uuid=VS, step=5, limit=4,
           now=BASE + 15) -> list[float]:
    [series] = store.series(kind, uuid, [metric], step=step, limit=limit, now=now)
    assert series["header"]["name"] == metric and series["header"]["entity_uuid"] == uuid
    return [point["value"] for point in series["data"]]


FIRST = counters(conns=10, responses=(0, 0, 10, 0, 0, 0), bytes_in=1000, bytes_out=2000,
                 latency_sum=1.0, latency_count=10, errors=0, open_conns=1)
# 10 more connections and responses: 1xx 1, 2xx 5, 3xx 2, 4xx 1, 5xx 1; 500 bytes in, 2500
# out; 0.5 s of latency over 10 responses; 2 errors; 3 open connections now
SECOND = counters(conns=20, responses=(0, 1, 15, 2, 1, 1), bytes_in=1500, bytes_out=4500,
                  latency_sum=1.5, latency_count=20, errors=2, open_conns=3)


def two_samples(store, se=SE_A, start=BASE):
    store.ingest(se, metrics(start, FIRST, FIRST))
    store.ingest(se, metrics(start + 5, SECOND, SECOND))
    store.flush()


# -- metrics -----------------------------------------------------------------------------------

@pytest.mark.parametrize("metric,expected", [
    ("l4_client.avg_complete_conns", 10 / 5),
    ("l7_client.avg_complete_responses", 10 / 5),
    ("l7_client.avg_resp_1xx", 1 / 5),
    ("l7_client.avg_resp_2xx", 5 / 5),
    ("l7_client.avg_resp_3xx", 2 / 5),
    ("l7_client.avg_resp_4xx", 1 / 5),
    ("l7_client.avg_resp_5xx", 1 / 5),
    ("l7_client.avg_total_time", 0.5 / 10 * 1000),
    ("l4_client.avg_bandwidth", (500 + 2500) * 8 / 5),
    ("l4_client.avg_errored_connections", 2 / 5),
    ("l4_client.max_open_conns", 3.0),
])
def test_each_metric_from_the_delta_of_two_samples(store, metric, expected):
    two_samples(store)
    # a window of 4 steps ending with the one that holds BASE+15: BASE, +5, +10, +15
    got = values(store, metric)
    assert got == pytest.approx([0.0, expected, 0.0, 0.0])
    assert values(store, metric, kind="pool", uuid=POOL) == pytest.approx(got)
    assert values(store, metric, kind="serviceengine", uuid=SE_A) == pytest.approx(got)


def test_every_served_metric_id_is_computed():
    assert set(METRICS) >= {"l4_client.avg_complete_conns", "l7_client.avg_complete_responses",
                            "l7_client.avg_resp_4xx", "l7_client.avg_resp_5xx",
                            "l7_client.avg_total_time", "l4_client.avg_bandwidth"}


def test_the_first_sample_only_sets_the_baseline(store):
    store.ingest(SE_A, metrics(BASE, SECOND))
    store.flush()
    assert values(store, "l4_client.avg_complete_conns") == [0.0] * 4


def test_a_virtual_service_new_on_a_reporting_se_counts_from_zero(store):
    store.ingest(SE_A, metrics(BASE))  # the SE reports, with no virtual service yet
    store.ingest(SE_A, metrics(BASE + 5, FIRST))  # placed there since: all of it is new
    store.flush()
    assert values(store, "l4_client.avg_complete_conns")[1] == pytest.approx(10 / 5)
    assert values(store, "l4_client.avg_complete_conns", kind="serviceengine",
                  uuid=SE_A)[1] == pytest.approx(10 / 5)


def test_ses_are_summed_and_a_step_sums_its_samples(store):
    two_samples(store, SE_A)
    two_samples(store, SE_B)
    assert values(store, "l4_client.avg_complete_conns")[1] == pytest.approx(20 / 5)
    third = {**SECOND, "total_conns": 30, "responses": [0, 1, 25, 2, 1, 1], "latency_sum": 3.5,
             "latency_count": 30, "open_conns": 7}
    store.ingest(SE_A, metrics(BASE + 8, third))
    store.flush()
    # a 10 s step holds BASE+5 (both SEs) and BASE+8 (SE A): 30 connections over 10 s
    ten = {"step": 10, "limit": 2, "now": BASE + 9}
    assert values(store, "l4_client.avg_complete_conns", **ten) == pytest.approx([0.0, 3.0])
    # latency is a mean over responses: (0.5 + 0.5 + 2.0) s over 30 responses
    assert values(store, "l7_client.avg_total_time", **ten)[1] == pytest.approx(100.0)
    assert values(store, "l4_client.max_open_conns", **ten)[1] == 7.0
    # the SE's own series counts only its virtual services
    assert values(store, "l4_client.avg_complete_conns", kind="serviceengine", uuid=SE_B,
                  **ten) == pytest.approx([0.0, 1.0])


def test_an_se_restart_resets_its_counters_without_negative_deltas(store):
    two_samples(store)
    restarted = counters(conns=3, responses=(0, 0, 3, 0, 0, 0), latency_count=3)
    later = counters(conns=8, responses=(0, 0, 8, 0, 0, 0), latency_count=8)
    store.ingest(SE_A, metrics(BASE + 10, restarted))
    store.ingest(SE_A, metrics(BASE + 15, later))
    store.flush()
    got = values(store, "l4_client.avg_complete_conns", limit=5, now=BASE + 19)
    # BASE+5: 10 new; BASE+10: the restart (no sample); BASE+15: 5 new since the restart
    assert got == pytest.approx([0.0, 0.0, 2.0, 0.0, 1.0])
    assert all(v >= 0 for v in values(store, "l4_client.avg_bandwidth", limit=5, now=BASE + 19))


def test_series_statistics_and_timestamps(store):
    two_samples(store)
    [series] = store.series("virtualservice", VS, ["l4_client.avg_complete_conns"], step=5,
                            limit=4, now=BASE + 15)
    assert series["header"]["statistics"] == {"min": 0.0, "max": 2.0, "mean": 0.5}
    stamps = [calendar.timegm(time.strptime(p["timestamp"][:19], "%Y-%m-%dT%H:%M:%S"))
              for p in series["data"]]
    assert stamps == [BASE + 5, BASE + 10, BASE + 15, BASE + 20]  # the end of each step


def test_unknown_entities_have_empty_series(store):
    two_samples(store)
    assert values(store, "l4_client.avg_complete_conns", uuid="virtualservice-other") == [0.0] * 4


# -- logs --------------------------------------------------------------------------------------

def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + ".250000Z"


def record(second: int, status: int, client: str, uri: str, server: str,
           significant: bool = False, vs: str = VS) -> dict:
    return {"time": iso(BASE + second),
            "vs_uuid": vs, "status": status, "client": client, "uri": uri, "server": server,
            "significant": significant}


LOGS = [record(1, 200, "127.0.0.1:40001", "/a", "127.0.0.1:8001"),
        record(2, 200, "127.0.0.2:40002", "/b", "127.0.0.1:8002"),
        record(3, 503, "127.0.0.1:40003", "/a", "127.0.0.1:8001", significant=True),
        record(4, 404, "[::1]:40004", "/c", "127.0.0.1:8002", significant=True),
        record(5, 200, "127.0.0.1:40005", "/a", "127.0.0.1:8001", vs="virtualservice-2")]


@pytest.fixture
def logged(store):
    store.ingest(SE_A, {"type": "logs", "records": LOGS[:3]})
    store.ingest(SE_B, {"type": "logs", "records": LOGS[3:]})
    store.flush()
    return store


def statuses(result) -> list[int]:
    return [r["status"] for r in result[1]]


def test_logs_of_one_virtual_service_newest_first(logged):
    count, rows = logged.logs(VS)
    assert count == 4
    assert [r["uri"] for r in rows] == ["/c", "/a", "/b", "/a"]
    assert rows[0]["se"] == SE_B and rows[1]["se"] == SE_A


@pytest.mark.parametrize("filters,expected", [
    ({"status": 200}, [200, 200]),
    ({"status": 503}, [503]),
    ({"client_ip": "127.0.0.1"}, [503, 200]),
    ({"client_ip": "::1"}, [404]),
    ({"uri": "/a"}, [503, 200]),
    ({"server": "127.0.0.1:8002"}, [404, 200]),
    ({"significant": 1}, [404, 503]),
    ({"significant": 0}, [200, 200]),
    ({"significant": 1, "uri": "/a"}, [503]),
    ({"status": 418}, []),
])
def test_log_filters(logged, filters, expected):
    result = logged.logs(VS, filters=filters)
    assert statuses(result) == expected and result[0] == len(expected)


def test_log_time_window_and_paging(logged):
    t2 = _parse_time(LOGS[1]["time"])
    t3 = _parse_time(LOGS[2]["time"])
    assert statuses(logged.logs(VS, start=t2, end=t3)) == [503, 200]
    assert statuses(logged.logs(VS, start=t3)) == [404, 503]
    count, rows = logged.logs(VS, offset=1, limit=2)
    assert count == 4 and [r["uri"] for r in rows] == ["/a", "/b"]


def test_log_times_parse():
    assert _parse_time("2023-11-14T22:13:20.250000Z") == pytest.approx(1_700_000_000.25)
    assert _parse_time("2023-11-14T22:13:20Z") == 1_700_000_000
    assert _parse_time(1_700_000_000.5) == 1_700_000_000.5


# -- retention ---------------------------------------------------------------------------------

def test_retention_by_age_and_by_count(tmp_path):
    s = AnalyticsStore(str(tmp_path / "a.db"), log_retention=45, metric_retention=50,
                       max_logs=3)
    now = time.time()
    try:
        s.ingest(SE_A, {"type": "logs", "records": [
            {"time": now - 60 + i * 10, "vs_uuid": VS, "status": 200 + i} for i in range(6)]})
        s.ingest(SE_A, metrics(now - 70, FIRST))
        s.ingest(SE_A, metrics(now - 65, SECOND))
        s.ingest(SE_A, metrics(now - 5, {**SECOND, "total_conns": 30}))
        s.flush()
        s.prune(now=now)
        # age: logs before now-45 and samples before now-50 go; count: the 3 newest logs stay
        assert statuses(s.logs(VS)) == [205, 204, 203]
        rows = sqlite3.connect(s.path).execute("SELECT ts FROM samples").fetchall()
        assert rows == [(now - 5,)] * 2  # the virtual service's and the SE's
    finally:
        s.close()


# -- robustness --------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [
    {"type": "metrics", "ts": BASE, "virtualservices": "nope"},
    {"type": "metrics", "ts": "soon", "virtualservices": {}},
    {"type": "metrics", "ts": BASE, "virtualservices": {VS: {"total_conns": "many"}}},
    {"type": "logs", "records": "nope"},
    {"type": "logs", "records": [7, None]},
    {"type": "logs", "records": [{"time": "2023-13-99T99:99:99Z", "vs_uuid": VS}]},
])
def test_a_malformed_message_does_not_stop_ingestion(store, bad):
    store.ingest(SE_A, bad)
    store.ingest(SE_B, {"type": "logs", "records": LOGS[:1]})
    two_samples(store, SE_B)
    assert store.logs(VS)[0] >= 1
    assert values(store, "l4_client.avg_complete_conns", kind="serviceengine",
                  uuid=SE_B)[1] == pytest.approx(2.0)


def test_flush_waits_for_everything_ingested(store):
    for i in range(2000):
        store.ingest(SE_A, {"type": "logs", "records": [
            {"time": BASE + i, "vs_uuid": VS, "status": 200}]})
    store.flush()
    assert store.logs(VS)[0] == 2000


# -- health score ------------------------------------------------------------------------------

def test_health_score_components():
    perfect = health_score(0, 10, 0, 1, 1)
    assert perfect == {"health_score": 100.0, "performance_score": 100.0,
                       "resources_penalty": 0.0, "anomaly_penalty": 0.0}
    errors = health_score(1, 10, 0, 1, 1)  # 10 % errors
    assert errors["performance_score"] == 90.0 and errors["anomaly_penalty"] == 25.0
    assert errors["health_score"] == 65.0
    slow = health_score(0, 10, 400, 1, 1)  # 400 ms costs 20 points
    assert slow["health_score"] == 80.0
    half = health_score(0, 10, 0, 1, 2)
    assert half["resources_penalty"] == 25.0 and half["health_score"] == 75.0
    assert health_score(0, 10, 0, 0, 1)["health_score"] == 0.0  # nothing serves it
