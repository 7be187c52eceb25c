"""`vantage-controller` as a new user starts it: HTTPS with a generated certificate, the
first-start admin password printed once and kept in a private file, clear errors."""
from __future__ import annotations

import os
import stat

import requests

from tests.functional.conftest import start_controller, stop_controller


def test_https_with_the_generated_certificate(controller):
    assert controller.url.startswith("https://") and controller.ca_file
    session = requests.Session()
    # per request: a session-wide `verify` loses to REQUESTS_CA_BUNDLE in requests
    tls = {"verify": controller.ca_file, "timeout": 10}  # the certificate names 127.0.0.1
    result = session.post(f"{controller.url}/login",
                          json={"username": controller.username,
                                "password": controller.password}, **tls)
    assert result.status_code == 200
    assert result.cookies["sessionid"] and result.cookies["csrftoken"]
    headers = {"X-CSRFToken": session.cookies["csrftoken"], "Referer": controller.url}
    created = session.post(f"{controller.url}/api/pool", json={"name": "svc-test-web", "bad": 1},
                           headers=headers, **tls)
    assert created.status_code == 400 and created.json()["error"] == "bad: unknown field"
    assert session.post(f"{controller.url}/logout", headers=headers, **tls).ok
    assert session.get(f"{controller.url}/api/pool", **tls).status_code == 401


def test_first_start_prints_a_generated_password_once(tmp_path):
    ctrl = start_controller(tmp_path, extra_config="[controlplane]\nenabled = false\n",
                            env={"VANTAGE_ADMIN_PASSWORD": ""})
    try:
        password_file = ctrl.state_path / "admin-password"
        password = password_file.read_text().strip()
        assert stat.S_IMODE(os.stat(password_file).st_mode) == 0o600
        assert f"password: {password}" in ctrl.log_file.read_text()
        with requests.Session() as session:  # closed: the server need not wait for it
            login = session.post(f"{ctrl.url}/login", json={"username": "admin",
                                                            "password": password},
                                 verify=ctrl.ca_file, timeout=10)
        assert login.status_code == 200
    finally:
        stop_controller(ctrl)
    log_before = ctrl.log_file.read_text()
    again = start_controller(tmp_path, extra_config="[controlplane]\nenabled = false\n",
                             env={"VANTAGE_ADMIN_PASSWORD": ""})
    try:
        assert password_file.read_text().strip() == password
        # the log file is rewritten on each start: the second start printed no password
        assert "password:" not in again.log_file.read_text()
        assert "password:" in log_before
    finally:
        stop_controller(again)
