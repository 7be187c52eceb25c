"""The controller's REST API as a Falcon ASGI application, built by `create_app`."""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import importlib.metadata
import logging
import os
from collections.abc import Callable

import falcon
import falcon.asgi
import falcon.media
import orjson

from vantage.api import errors
from vantage.api.middleware import AuthMiddleware
from vantage.api.openapi import build_openapi
from vantage.api.resources import (
    AuditLog,
    Collection,
    Context,
    InitialData,
    Item,
    Login,
    Logout,
    OpenApi,
    Token,
    Tokens,
)
from vantage.controller.auth import AuthService, AuthSettings
from vantage.controller.bootstrap import create_admin_user, create_builtin_objects
from vantage.controller.objects import ObjectService
from vantage.controller.secretbox import SecretBox, load_or_create_key
from vantage.db.store import Store, default_sqlite_url
from vantage.model.registry import KINDS

LOG = logging.getLogger(__name__)
ADMIN_PASSWORD_ENV = "VANTAGE_ADMIN_PASSWORD"


def _version() -> dict[str, str]:
    try:
        version = importlib.metadata.version("vantage")
    except importlib.metadata.PackageNotFoundError:
        version = "0.0.0"
    return {"Version": version, "ProductName": "Vantage Controller", "min_version": "18.1.1"}


def _announce_password(path: str, password: str) -> None:
    LOG.warning("first start: user 'admin' was created with the generated password %s "
                "(also in %s, mode 0600); set VANTAGE_ADMIN_PASSWORD to choose it instead",
                password, path)


class _Workers:
    """Threads that run the (blocking) service calls; started on first use and stopped with
    the server, so that an app survives several lifespans (as in tests)."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    async def run(self, fn, *args, **kwargs):
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                self._count, thread_name_prefix="vantage-api")
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(fn, *args, **kwargs))

    async def process_shutdown(self, scope, event) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


@dataclasses.dataclass
class Services:
    """The controller services behind the API."""

    store: Store
    objects: ObjectService
    auth: AuthService


def build_services(conf, *, store: Store | None = None,
                   announce_password: Callable[[str, str], None] | None = None,
                   environ: dict[str, str] | None = None) -> Services:
    """Open (and migrate) the store for `conf`, create the built-in objects and, on first
    start, the admin user (password from VANTAGE_ADMIN_PASSWORD, or generated)."""
    environ = os.environ if environ is None else environ
    state_path = conf.state_path
    os.makedirs(state_path, mode=0o700, exist_ok=True)
    if store is None:
        store = Store(conf.database.connection or default_sqlite_url(state_path),
                      pool_size=conf.database.pool_size, busy_timeout=conf.database.busy_timeout)
    store.upgrade()
    key_file = conf.secrets.key_file or os.path.join(state_path, "secret.key")
    objects = ObjectService(store, SecretBox(load_or_create_key(key_file)),
                            scrypt_n=conf.auth.scrypt_n)
    created = create_builtin_objects(objects)
    if created:
        LOG.info("created %d built-in objects", created)
    password = create_admin_user(objects, state_path, conf.auth.admin_password_file,
                                 environ.get(ADMIN_PASSWORD_ENV))
    if password:
        (announce_password or _announce_password)(
            os.path.join(state_path, conf.auth.admin_password_file), password)
    return Services(store, objects, AuthService(objects, AuthSettings.from_conf(conf)))


def create_app(conf, *, services: Services | None = None, control_plane=None,
               **kwargs) -> falcon.asgi.App:
    """The REST API for `conf` (see vantage.conf). `services` defaults to
    `build_services(conf, **kwargs)`. With a `control_plane` (vantage.controller.controlplane),
    the app also serves the SE channel and runtime sub-resources, and runs the control loop
    for as long as the server runs."""
    services = services or build_services(conf, **kwargs)
    workers = _Workers(conf.api.workers)
    run = workers.run
    version = _version()
    ctx = Context(services.objects, services.auth, run, public_url=conf.api.public_url,
                  default_page_size=conf.api.default_page_size, version=version)
    app = falcon.asgi.App(middleware=[
        workers,
        AuthMiddleware(services.auth, run, public_url=conf.api.public_url,
                       trusted_origins=conf.api.trusted_origins)])
    json_handler = falcon.media.JSONHandler(
        dumps=lambda obj: orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS).decode(),
        loads=orjson.loads)
    app.req_options.media_handlers[falcon.MEDIA_JSON] = json_handler
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = json_handler
    app.req_options.strip_url_path_trailing_slash = True
    app.req_options.auto_parse_qs_csv = False
    errors.install(app)

    app.add_route("/login", Login(ctx))
    app.add_route("/logout", Logout(ctx))
    app.add_route("/api/initial-data", InitialData(ctx))
    app.add_route("/api/openapi.json", OpenApi(build_openapi(version["Version"])))
    app.add_route("/api/usertoken", Tokens(ctx))
    app.add_route("/api/usertoken/{uuid}", Token(ctx))
    app.add_route("/api/auditlog", AuditLog(ctx))
    for kind in KINDS:
        app.add_route(f"/api/{kind}", Collection(ctx, kind))
        app.add_route(f"/api/{kind}/{{uuid}}", Item(ctx, kind))
    if control_plane is not None:
        from vantage.api import controlplane
        controlplane.install(app, ctx, control_plane)
    return app
