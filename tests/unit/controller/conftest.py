"""Fixtures: the controller services on a fresh store (cloned from a session template)."""
from __future__ import annotations

import pytest

from tests.controllerlib import build_template, clone_state, make_conf
from vantage.api.app import build_services


@pytest.fixture(scope="session")
def controller_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("controller-template")
    build_template(str(path))
    return str(path)


@pytest.fixture
def state_path(controller_template, tmp_path):
    state = tmp_path / "state"
    clone_state(controller_template, str(state))
    return state


@pytest.fixture
def services(state_path):
    svc = build_services(make_conf(str(state_path)))
    yield svc
    svc.store.dispose()
