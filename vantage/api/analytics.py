"""`/api/analytics/...`: metrics series, request logs and health scores (Avi's paths)."""
from __future__ import annotations

import falcon

from vantage.analytics.store import METRICS, AnalyticsStore, health_score
from vantage.api.resources import Context
from vantage.controller.errors import InvalidInput

ENTITIES = ("virtualservice", "pool", "serviceengine")
LOG_FILTERS = {"status": int, "client_ip": str, "uri": str, "server": str,
               "significant": lambda v: 1 if v.lower() in ("1", "true", "yes") else 0}


def _int(req, name: str, default: int, low: int, high: int) -> int:
    raw = req.get_param(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name}: {raw!r} is not an integer") from None
    if not low <= value <= high:
        raise InvalidInput(f"{name}: must be between {low} and {high}")
    return value


def _float(req, name: str) -> float | None:
    raw = req.get_param(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        raise InvalidInput(f"{name}: {raw!r} is not a time in seconds since the epoch") from None


class Metrics:
    def __init__(self, ctx: Context, store: AnalyticsStore) -> None:
        self.ctx = ctx
        self.store = store

    async def on_get(self, req, resp, entity: str, uuid: str) -> None:
        if entity not in ENTITIES:
            raise falcon.HTTPNotFound(description=f"no analytics for {entity!r}")
        await self.ctx.run(self.ctx.objects.get, req.context.caller, entity, uuid,
                           self.ctx.wire(req))
        ids = [m for m in (req.get_param("metric_id") or "").split(",") if m]
        if not ids:
            raise InvalidInput("metric_id: give one or more of " + ", ".join(METRICS))
        unknown = [m for m in ids if m not in METRICS]
        if unknown:
            raise InvalidInput(f"metric_id: unknown {', '.join(unknown)} (known: "
                               f"{', '.join(METRICS)})")
        step = _int(req, "step", 300, 5, 86400)
        limit = _int(req, "limit", 12, 1, 1000)
        series = await self.ctx.run(self.store.series, entity, uuid, ids, step=step, limit=limit)
        resp.media = {"entity_uuid": uuid, "step": step, "limit": limit, "series": series}


class Logs:
    def __init__(self, ctx: Context, store: AnalyticsStore) -> None:
        self.ctx = ctx
        self.store = store

    async def on_get(self, req, resp) -> None:
        vs = req.get_param("virtualservice")
        if not vs:
            raise InvalidInput("virtualservice: the UUID of the virtual service is required")
        await self.ctx.run(self.ctx.objects.get, req.context.caller, "virtualservice", vs,
                           self.ctx.wire(req))
        filters = {}
        for item in req.get_param_as_list("filter") or []:
            for part in item.split(","):
                key, sep, value = part.partition("=")
                key = key.strip()
                if not sep or key not in LOG_FILTERS:
                    raise InvalidInput(f"filter: {part!r} is not one of "
                                       f"{', '.join(k + '=...' for k in LOG_FILTERS)}")
                try:
                    filters[key] = LOG_FILTERS[key](value.strip())
                except ValueError:
                    raise InvalidInput(f"filter: {part!r} has an invalid value") from None
        page_size = _int(req, "page_size", 50, 1, 10000)
        page = _int(req, "page", 1, 1, 1_000_000)
        count, results = await self.ctx.run(
            self.store.logs, vs, start=_float(req, "start"), end=_float(req, "end"),
            filters=filters, offset=(page - 1) * page_size, limit=page_size)
        resp.media = {"count": count, "results": results}


class HealthScore:
    def __init__(self, ctx: Context, store: AnalyticsStore, control_plane) -> None:
        self.ctx = ctx
        self.store = store
        self.cp = control_plane

    async def on_get(self, req, resp, entity: str, uuid: str) -> None:
        if entity != "virtualservice":
            raise falcon.HTTPNotFound(description="health scores exist for virtual services")
        await self.ctx.run(self.ctx.objects.get, req.context.caller, entity, uuid,
                           self.ctx.wire(req))
        series = await self.ctx.run(
            self.store.series, entity, uuid,
            ["l7_client.avg_resp_5xx", "l7_client.avg_complete_responses",
             "l7_client.avg_total_time"], step=300, limit=1)
        r5, total, latency = (s["data"][-1]["value"] for s in series)
        runtime = self.cp.vs_runtime.get(uuid)
        ses = runtime.service_engines if runtime else []
        wanted = len([s for s in ses if not s["standby"]])
        up = len([s for s in ses if not s["standby"] and s["connected"] and s["config_applied"]])
        resp.media = {"entity_uuid": uuid, **health_score(r5, total, latency, up, wanted)}


class PrometheusMetrics:
    """`GET /metrics`: per virtual service counters summed over the SEs serving it."""

    def __init__(self, control_plane) -> None:
        self.cp = control_plane

    async def on_get(self, req, resp) -> None:
        caller = req.context.caller
        if caller is None or not caller.superuser:
            # the totals span every tenant: for the system administrator only
            raise falcon.HTTPForbidden(description="the deployment's metrics are for system "
                                                   "administrators (use an API token)")
        from prometheus_client import generate_latest
        resp.content_type = "text/plain; version=0.0.4; charset=utf-8"
        resp.data = generate_latest(self.cp.metrics_registry)


def install(app, ctx: Context, store: AnalyticsStore, control_plane) -> None:
    app.add_route("/api/analytics/metrics/{entity}/{uuid}", Metrics(ctx, store))
    app.add_route("/api/analytics/logs", Logs(ctx, store))
    app.add_route("/api/analytics/healthscore/{entity}/{uuid}",
                  HealthScore(ctx, store, control_plane))
    app.add_route("/metrics", PrometheusMetrics(control_plane))
