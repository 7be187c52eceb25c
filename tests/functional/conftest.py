"""Fixtures for functional tests: a real `vantage-controller` process on 127.0.0.1."""
from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import warnings

import pytest
import requests
import urllib3

from tests.functional.controlplane_fixtures import terminate_with_parent
from vantage.client import Client

ADMIN_PASSWORD = "functional-admin-Passw0rd"
_START_TIMEOUT = 60.0


@dataclasses.dataclass
class RunningController:
    """A started controller: where it listens and how to log in to it."""

    url: str
    username: str
    password: str
    state_path: pathlib.Path
    config_file: pathlib.Path
    log_file: pathlib.Path
    #: the controller's (self-signed) certificate, to verify it with; None if not found
    ca_file: str | None
    process: subprocess.Popen

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def insecure(self) -> bool:
        """True when no CA file was found and TLS verification has to be off."""
        return self.url.startswith("https") and self.ca_file is None

    @property
    def verify(self) -> bool | str:
        return False if self.insecure else (self.ca_file or True)

    def client(self, **kwargs) -> Client:
        kwargs.setdefault("username", self.username)
        kwargs.setdefault("password", self.password)
        kwargs.setdefault("verify", self.verify)
        return Client(self.url, **kwargs)

    def env(self) -> dict[str, str]:
        """Environment for running the `vantage` CLI against this controller."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("VANTAGE_")}
        env.update(VANTAGE_URL=self.url, VANTAGE_USERNAME=self.username,
                   VANTAGE_PASSWORD=self.password)
        if self.insecure:
            env["VANTAGE_INSECURE"] = "1"
        elif self.ca_file:
            env["VANTAGE_CA_FILE"] = self.ca_file
        return env

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _controller_command() -> list[str]:
    exe = shutil.which("vantage-controller")
    if exe:
        return [exe]
    return [sys.executable, "-m", "vantage.controller.cmd"]


def _find_ca_file(state_path: pathlib.Path) -> str | None:
    """The generated certificate in the state directory (`api-cert.pem` today)."""
    if (state_path / "api-cert.pem").is_file():
        return str(state_path / "api-cert.pem")
    candidates = sorted(p for p in state_path.rglob("*")
                        if p.is_file() and p.suffix in (".crt", ".pem")
                        and b"BEGIN CERTIFICATE" in p.read_bytes()[:4096]
                        and b"PRIVATE KEY" not in p.read_bytes())
    return str(candidates[0]) if candidates else None


def start_controller(base: pathlib.Path, *, extra_config: str = "", control_plane: bool = False,
                     env: dict[str, str] | None = None) -> RunningController:
    """Start `vantage-controller` with its state under `base`; wait until it answers.

    `extra_config` is more ini text (start it with a `[section]` line). The control plane is
    off unless `control_plane` is true; then the caller must stop the SE processes it starts
    (under `<state_path>/ses/`).
    """
    state = base / "state"
    state.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    config_file = base / "vantage.conf"
    # The REST API alone: with the control plane on, every virtual service a test creates
    # would start SE processes (local cloud) that outlive the controller.
    config_file.write_text(
        f"[DEFAULT]\nstate_path = {state}\n\n"
        f"[api]\nbind_host = 127.0.0.1\nbind_port = {port}\n\n"
        f"[controlplane]\nenabled = {'true' if control_plane else 'false'}\n\n"
        f"{extra_config}\n")
    log_file = base / "controller.log"
    proc_env = {**os.environ, "VANTAGE_ADMIN_PASSWORD": ADMIN_PASSWORD, **(env or {})}
    with open(log_file, "wb") as log:
        process = subprocess.Popen([*_controller_command(), "--config-file", str(config_file)],
                                   stdout=log, stderr=subprocess.STDOUT, env=proc_env,
                                   start_new_session=True, preexec_fn=terminate_with_parent)
    ctrl = RunningController(url=f"https://127.0.0.1:{port}", username="admin",
                             password=ADMIN_PASSWORD, state_path=state, config_file=config_file,
                             log_file=log_file, ca_file=None, process=process)
    deadline = time.monotonic() + _START_TIMEOUT
    with warnings.catch_warnings():
        # readiness probes go out before the certificate is known
        warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"vantage-controller exited with {process.returncode}:\n"
                                   f"{ctrl.log_tail()}")
            for scheme in ("https", "http"):
                try:
                    requests.get(f"{scheme}://127.0.0.1:{port}/api/initial-data", verify=False,
                                 timeout=2)
                except requests.RequestException:
                    continue
                ctrl.url = f"{scheme}://127.0.0.1:{port}"
                ctrl.ca_file = _find_ca_file(state) if scheme == "https" else None
                return ctrl
            if time.monotonic() > deadline:
                stop_controller(ctrl)
                raise RuntimeError(f"vantage-controller did not answer on port {port} within "
                                   f"{_START_TIMEOUT:g} s:\n{ctrl.log_tail()}")
            time.sleep(0.2)


def stop_controller(ctrl: RunningController) -> None:
    if ctrl.process.poll() is None:
        ctrl.process.terminate()
        try:
            ctrl.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            ctrl.process.kill()
            ctrl.process.wait(timeout=5)


@pytest.fixture(scope="session")
def controller(tmp_path_factory) -> RunningController:
    """One real `vantage-controller` for the session (SQLite state in a temp directory).

    Tests share it: give objects unique names and delete what you create.
    """
    ctrl = start_controller(tmp_path_factory.mktemp("controller"))
    yield ctrl
    stop_controller(ctrl)
