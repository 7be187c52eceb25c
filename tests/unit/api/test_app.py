"""First start (built-in objects, the admin password) and the OpenAPI document."""
from __future__ import annotations

import os
import pathlib
import stat

import pytest

from tests.controllerlib import ApiClient, make_conf
from vantage.api.app import build_services, create_app
from vantage.model.registry import KINDS


def test_first_start_generates_a_private_admin_password_once(tmp_path):
    announced = []
    conf = make_conf(str(tmp_path / "state"))
    services = build_services(conf, environ={},
                              announce_password=lambda path, pw: announced.append((path, pw)))
    services.store.dispose()
    assert len(announced) == 1
    path, password = announced[0]
    assert pathlib.Path(path).read_text().strip() == password and len(password) >= 16
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # a restart creates nothing and announces nothing
    app = create_app(conf, environ={}, announce_password=lambda *a: announced.append(a))
    assert len(announced) == 1
    client = ApiClient(app)
    assert client.login("admin", password).status_code == 200


def test_admin_password_from_the_environment_writes_no_file(tmp_path):
    conf = make_conf(str(tmp_path / "state"))
    app = create_app(conf, environ={"VANTAGE_ADMIN_PASSWORD": "from-env-password"})
    assert not (tmp_path / "state" / "admin-password").exists()
    assert ApiClient(app).login("admin", "from-env-password").status_code == 200


def test_openapi_document_is_served_and_covers_every_kind(app):
    result = ApiClient(app).get("/api/openapi.json")
    assert result.status_code == 200
    doc = result.json
    assert doc["openapi"].startswith("3.")
    for kind in KINDS:
        assert {"get", "post"} <= set(doc["paths"][f"/api/{kind}"])
        assert {"get", "put", "patch", "delete"} <= set(doc["paths"][f"/api/{kind}/{{uuid}}"])
    pool = doc["components"]["schemas"]["Pool"]
    assert pool["additionalProperties"] is False
    assert "LB_ALGORITHM_ROUND_ROBIN" in str(doc["components"]["schemas"]["LbAlgorithm"])
    user = doc["components"]["schemas"]["User"]
    assert user["properties"]["password"]["writeOnly"] is True


@pytest.mark.parametrize("path", ["/api/initial-data", "/api/openapi.json"])
def test_public_endpoints_need_no_login(app, path):
    assert ApiClient(app).get(path).status_code == 200


def test_a_500_does_not_echo_the_exception(app, monkeypatch, admin):
    from vantage.controller.objects import ObjectService

    def boom(*args, **kwargs):
        raise RuntimeError("secret internal detail")
    monkeypatch.setattr(ObjectService, "list", boom)
    result = admin.get("/api/pool")
    assert result.status_code == 500
    assert "secret internal detail" not in result.text and "reference" in result.json["error"]
