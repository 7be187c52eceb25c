import io
import json
import logging

import pytest

from tests.unit.client.avi_stub import AviStub
from vantage.cli.app import VantageApp


class CliRun:
    def __init__(self, rc, out, err):
        self.rc, self.out, self.err = rc, out, err

    def json(self):
        return json.loads(self.out)


@pytest.fixture
def stub():
    with AviStub() as server:
        yield server


@pytest.fixture
def cli_env(monkeypatch, tmp_path):
    """A clean environment: no VANTAGE_* variables, config under tmp_path."""
    for name in ("VANTAGE_URL", "VANTAGE_USERNAME", "VANTAGE_PASSWORD", "VANTAGE_TOKEN",
                 "VANTAGE_TENANT", "VANTAGE_CA_FILE", "VANTAGE_INSECURE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return monkeypatch


@pytest.fixture
def logged_env(cli_env, stub):
    cli_env.setenv("VANTAGE_URL", stub.url)
    cli_env.setenv("VANTAGE_USERNAME", "admin")
    cli_env.setenv("VANTAGE_PASSWORD", "secret")
    return cli_env


@pytest.fixture
def vantage():
    """Run the `vantage` command in-process: vantage("pool", "list") -> CliRun."""
    def run(*argv):
        out, err = io.StringIO(), io.StringIO()
        root = logging.getLogger("")
        before = list(root.handlers)
        try:
            rc = VantageApp(stdout=out, stderr=err).run(list(argv))
        finally:
            for handler in root.handlers[:]:
                if handler not in before:
                    root.removeHandler(handler)
        return CliRun(rc, out.getvalue(), err.getvalue())
    return run
