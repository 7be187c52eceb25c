"""Fixtures: a fresh controller app per test (state cloned from a session-wide template)."""
from __future__ import annotations

import pytest

from tests.controllerlib import (
    ApiClient,
    build_template,
    clone_state,
    create_app,
    make_conf,
)


@pytest.fixture(scope="session")
def controller_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("controller-template")
    build_template(str(path))
    return str(path)


@pytest.fixture
def conf(controller_template, tmp_path):
    state = tmp_path / "state"
    clone_state(controller_template, str(state))
    return make_conf(str(state))


@pytest.fixture
def app(conf):
    return create_app(conf)


@pytest.fixture
def admin(app):
    """An ApiClient logged in as the admin superuser (session cookie + CSRF)."""
    client = ApiClient(app)
    assert client.login().status_code == 200
    return client
