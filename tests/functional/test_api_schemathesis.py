"""schemathesis against the OpenAPI document a running `vantage-controller` serves: generated
requests (valid and invalid) never get a 5xx, and every answer conforms to the schema."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.functional.conftest import start_controller, stop_controller

pytest.importorskip("schemathesis")

#: a time budget well under a minute; schemathesis stops generating when it is spent
MAX_TIME = 25
MAX_EXAMPLES = 5


@pytest.fixture(scope="module")
def fuzzed_controller(tmp_path_factory):
    """A controller of its own: the fuzzer creates and changes objects at random."""
    ctrl = start_controller(tmp_path_factory.mktemp("schemathesis"))
    yield ctrl
    stop_controller(ctrl)


@pytest.mark.timeout(MAX_TIME + 90)
def test_generated_requests_get_no_server_errors_and_conforming_answers(fuzzed_controller,
                                                                        tmp_path):
    with fuzzed_controller.client() as client:
        token = client.create_token(name="schemathesis")["token"]
    tls = ["--tls-verify", fuzzed_controller.ca_file or "false"]
    cmd = [
        sys.executable, "-m", "schemathesis.cli", "run",
        f"{fuzzed_controller.url}/api/openapi.json",
        "--header", f"Authorization: Bearer {token}", *tls,
        "--checks", "not_a_server_error,response_schema_conformance",
        "--phases", "examples,fuzzing", "--max-examples", str(MAX_EXAMPLES),
        "--max-time", str(MAX_TIME), "--seed", "1", "--workers", "2", "--no-color",
        "--request-timeout", "20", "--generation-database", "none",
        # Revoking its own token (the list of tokens gives the fuzzer their UUIDs) would
        # leave everything after it a 401 and untested; logout likewise.
        "--exclude-path-regex", r"^/api/usertoken/\{uuid\}$",
        "--exclude-path", "/logout",
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=MAX_TIME + 80, check=False)
    output = proc.stdout + proc.stderr
    assert "Tested:" in output, output[-3000:]
    assert proc.returncode == 0, output[-6000:]
    assert fuzzed_controller.process.poll() is None, fuzzed_controller.log_tail()
