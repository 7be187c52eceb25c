"""API resources of the control plane: the SE channel and runtime sub-resources."""
from __future__ import annotations

import falcon
import falcon.asgi

from vantage.api import analytics
from vantage.api.resources import Context
from vantage.controller.controlplane import ControlPlane
from vantage.controller.errors import NotFound

WRITE_METHODS = frozenset(("POST", "PUT", "PATCH", "DELETE"))


class _FalconChannel:
    """A Falcon WebSocket as the SeManager's Channel."""

    def __init__(self, ws: falcon.asgi.WebSocket) -> None:
        self.ws = ws

    async def send(self, text: str) -> None:
        try:
            await self.ws.send_text(text)
        except falcon.WebSocketDisconnected:
            raise ConnectionError("SE channel closed") from None

    async def receive(self) -> str:
        try:
            return await self.ws.receive_text()
        except falcon.WebSocketDisconnected:
            raise ConnectionError("SE channel closed") from None

    async def close(self, code: int = 1000) -> None:
        if not self.ws.closed:
            await self.ws.close(code)


class SeChannel:
    """`wss://<controller>/api/se/channel`: SEs authenticate in the first message."""

    auth_required = False

    def __init__(self, control_plane: ControlPlane) -> None:
        self.cp = control_plane

    async def on_websocket(self, req, ws: falcon.asgi.WebSocket) -> None:
        await ws.accept()
        await self.cp.semanager.handle(_FalconChannel(ws), req.remote_addr or "?")


class VirtualServiceRuntime:
    """`GET /api/virtualservice/<uuid>/runtime`: oper status with reason, VIP, SEs with
    primary/standby flags, placement history."""

    def __init__(self, ctx: Context, control_plane: ControlPlane) -> None:
        self.ctx = ctx
        self.cp = control_plane

    async def on_get(self, req, resp, uuid: str) -> None:
        # visibility (tenant, role) is the object's: another tenant's VS is a 404
        obj = await self.ctx.run(self.ctx.objects.get, req.context.caller, "virtualservice",
                                 uuid, self.ctx.wire(req))
        runtime = self.cp.vs_runtime.get(uuid)
        if runtime is None:
            from vantage.controller.controlplane import VsRuntime
            runtime = VsRuntime()
        resp.media = runtime.as_dict(uuid, obj["name"])


class ServiceEngineRuntime:
    def __init__(self, ctx: Context, control_plane: ControlPlane) -> None:
        self.ctx = ctx
        self.cp = control_plane

    async def on_get(self, req, resp, uuid: str) -> None:
        await self.ctx.run(self.ctx.objects.get, req.context.caller, "serviceengine", uuid,
                           self.ctx.wire(req))
        runtime = self.cp.se_runtime(uuid)
        if runtime is None:
            raise NotFound(f"serviceengine {uuid} has no runtime state")
        resp.media = runtime


class CloudRuntime:
    """`GET /api/cloud/<uuid>/runtime`: the cloud's driver, its return path and its state."""

    def __init__(self, ctx: Context, control_plane: ControlPlane) -> None:
        self.ctx = ctx
        self.cp = control_plane

    async def on_get(self, req, resp, uuid: str) -> None:
        obj = await self.ctx.run(self.ctx.objects.get, req.context.caller, "cloud", uuid,
                                 self.ctx.wire(req))
        resp.media = await self.ctx.run(self.cp.cloud_runtime, uuid, obj)


class ControlPlaneMiddleware:
    """Starts and stops the control loop with the server; wakes it after API writes."""

    def __init__(self, control_plane: ControlPlane) -> None:
        self.cp = control_plane

    async def process_startup(self, scope, event) -> None:
        await self.cp.start()

    async def process_shutdown(self, scope, event) -> None:
        await self.cp.stop()

    async def process_response(self, req, resp, resource, req_succeeded) -> None:
        if req_succeeded and req.method in WRITE_METHODS and req.path.startswith("/api/"):
            self.cp.wake()


def install(app: falcon.asgi.App, ctx: Context, control_plane: ControlPlane) -> None:
    app.add_middleware(ControlPlaneMiddleware(control_plane))
    app.add_route("/api/se/channel", SeChannel(control_plane))
    app.add_route("/api/virtualservice/{uuid}/runtime", VirtualServiceRuntime(ctx, control_plane))
    app.add_route("/api/serviceengine/{uuid}/runtime", ServiceEngineRuntime(ctx, control_plane))
    app.add_route("/api/cloud/{uuid}/runtime", CloudRuntime(ctx, control_plane))
    analytics.install(app, ctx, control_plane.analytics, control_plane)
