"""Runtime and analytics views: `vantage virtualservice runtime`, `vantage serviceengine
runtime`, `vantage analytics logs`, `vantage analytics metrics`."""
from __future__ import annotations

import argparse
import time
from typing import Any

from cliff import lister, show


class _Runtime(show.ShowOne):
    kind = ""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME_OR_UUID")
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        client = self.app.client()
        obj = client.find(self.kind, args.name)
        data = client.request("GET", f"/api/{self.kind}/{obj['uuid']}/runtime")
        keys = tuple(sorted(data))
        return keys, tuple(data[k] for k in keys)


class VirtualServiceRuntime(_Runtime):
    """Oper status with its reason, VIPs, the SEs serving it (primary/standby), placement
    history."""

    kind = "virtualservice"


class ServiceEngineRuntime(_Runtime):
    """State, channel, applied configuration version, process id and server health."""

    kind = "serviceengine"


class AnalyticsLogs(lister.Lister):
    """Request and connection logs of a virtual service, newest first."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("virtualservice", metavar="VS")
        parser.add_argument("--since", type=float, default=3600, metavar="SECONDS",
                            help="How far back (default: an hour).")
        parser.add_argument("--filter", action="append", default=[], metavar="EXPR",
                            help="e.g. status=503, client_ip=127.0.0.1, uri=/x, server=IP:PORT, "
                                 "significant=true (repeatable).")
        parser.add_argument("--limit", type=int, default=50)
        return parser

    def take_action(self, args: argparse.Namespace):
        client = self.app.client()
        vs = client.find("virtualservice", args.virtualservice)
        params = {"virtualservice": vs["uuid"], "start": time.time() - args.since,
                  "page_size": args.limit}
        if args.filter:
            params["filter"] = args.filter
        data = client.request("GET", "/api/analytics/logs", params=params)
        columns = ("time", "client", "method", "uri", "status", "server", "total_time",
                   "significant", "reason")
        return columns, [tuple(r.get(c) for c in columns) for r in data.get("results", [])]


class AnalyticsMetrics(lister.Lister):
    """Metric series of a virtual service, pool or SE."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("entity", choices=["virtualservice", "pool", "serviceengine"])
        parser.add_argument("name", metavar="NAME_OR_UUID")
        parser.add_argument("--metric", action="append", metavar="METRIC_ID",
                            default=None, help="e.g. l7_client.avg_complete_responses")
        parser.add_argument("--step", type=int, default=60)
        parser.add_argument("--limit", type=int, default=10)
        return parser

    def take_action(self, args: argparse.Namespace):
        client = self.app.client()
        obj = client.find(args.entity, args.name)
        metrics = args.metric or ["l4_client.avg_complete_conns",
                                  "l7_client.avg_complete_responses",
                                  "l7_client.avg_resp_4xx", "l7_client.avg_resp_5xx",
                                  "l7_client.avg_total_time", "l4_client.avg_bandwidth"]
        data = client.request("GET", f"/api/analytics/metrics/{args.entity}/{obj['uuid']}",
                              params={"metric_id": ",".join(metrics), "step": args.step,
                                      "limit": args.limit})
        rows = []
        for series in data.get("series", []):
            for point in series.get("data", []):
                rows.append((series["header"]["name"], point.get("timestamp"), point.get("value")))
        return ("metric", "timestamp", "value"), rows
