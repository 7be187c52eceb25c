"""Helpers to build the controller in-process for tests: a configuration with its state in a
temporary directory (cloned from a migrated, seeded template so each test starts fresh in
milliseconds) and a client for the Falcon app that logs in the way avisdk does."""
from __future__ import annotations

import os
import shutil
from typing import Any

from falcon import testing

from vantage.api.app import build_services, create_app
from vantage.conf import build_conf

ADMIN_PASSWORD = "admin-Passw0rd-for-tests"
ORIGIN = "http://falconframework.org"  # falcon.testing's default scheme and host


def make_conf(state_path: str, **overrides: Any):
    """A ConfigOpts for a controller keeping its state in `state_path`. Keyword arguments
    `group__option=value` override options (`api__public_url="https://ctrl"`)."""
    conf = build_conf([])
    conf.set_override("state_path", str(state_path))
    conf.set_override("scrypt_n", 1024, group="auth")  # fast hashes: tests log in a lot
    for key, value in overrides.items():
        group, _, name = key.rpartition("__")
        conf.set_override(name, value, group=group or None)
    return conf


def build_template(path: str) -> None:
    """Migrate and seed a state directory once, to be copied by `clone_state`."""
    services = build_services(make_conf(path), environ={"VANTAGE_ADMIN_PASSWORD": ADMIN_PASSWORD})
    services.store.dispose()


def clone_state(template: str, target: str) -> None:
    os.makedirs(target, exist_ok=True)
    for name in os.listdir(template):
        if not name.startswith("vantage.db-"):  # no WAL or shm after dispose
            shutil.copy2(os.path.join(template, name), os.path.join(target, name))


class ApiClient:
    """Drives the ASGI app like an Avi client: session cookie plus X-CSRFToken and Referer on
    every call, or an API token."""

    def __init__(self, app, tenant: str | None = None) -> None:
        self.client = testing.TestClient(app)
        self.headers: dict[str, str] = {}
        self.tenant = tenant

    def login(self, username: str = "admin", password: str = ADMIN_PASSWORD):
        result = self.client.simulate_post("/login", json={"username": username,
                                                           "password": password})
        if result.status_code == 200:
            sid = result.cookies["sessionid"].value
            csrf = result.cookies["csrftoken"].value
            self.headers = {"Cookie": f"sessionid={sid}; csrftoken={csrf}",
                            "X-CSRFToken": csrf, "Referer": ORIGIN + "/"}
        return result

    def use_token(self, token: str) -> None:
        self.headers = {"Authorization": f"Bearer {token}"}

    def request(self, method: str, path: str, *, json: Any = None,
                headers: dict[str, str] | None = None, params: dict[str, Any] | None = None,
                body: str | None = None):
        hdrs = dict(self.headers)
        if self.tenant:
            hdrs["X-Avi-Tenant"] = self.tenant
        hdrs.update(headers or {})
        hdrs = {k: v for k, v in hdrs.items() if v is not None}
        return self.client.simulate_request(method, path, json=json, headers=hdrs,
                                            params=params, body=body)

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw):
        return self.request("POST", path, json=json, **kw)

    def put(self, path: str, json: Any = None, **kw):
        return self.request("PUT", path, json=json, **kw)

    def patch(self, path: str, json: Any = None, **kw):
        return self.request("PATCH", path, json=json, **kw)

    def delete(self, path: str, **kw):
        return self.request("DELETE", path, **kw)

    def create(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST and return the object, failing loudly when the controller refuses it."""
        result = self.post(f"/api/{kind}", body)
        assert result.status_code == 201, (result.status_code, result.text)
        return result.json


__all__ = ["ADMIN_PASSWORD", "ORIGIN", "ApiClient", "build_template", "clone_state",
           "create_app", "make_conf"]
