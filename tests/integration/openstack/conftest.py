"""The OpenStack integration tier's stack, one per test session.

`openstack_stack` uses, in this order:
1. a stack someone else runs: VANTAGE_OS_CLOUDS_YAML names its clouds.yaml (stack.json beside
   it); it is left running;
2. the stack in VANTAGE_OS_STATE (default /tmp/vantage-openstack) when it is up, or being
   brought up in the background (tests/run.sh starts `up.sh --install --background` first
   thing, so the bring-up overlaps the rest of the suite): the fixture waits for it and leaves
   it to whoever started it;
3. otherwise it runs `up.sh --install` itself and `down.sh` at the end of the session.

A stack that cannot be installed or brought up skips the tier with the reason and the tail of
the bring-up log, except under CI (CI=true), where it fails.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
DEFAULT_STATE = "/tmp/vantage-openstack"
#: how long the fixture waits for a bring-up (install included) it did not start, or runs one
BRINGUP_TIMEOUT = float(os.environ.get("VANTAGE_OS_BRINGUP_TIMEOUT", "1500"))


@dataclasses.dataclass
class Stack:
    """A running test cloud: its clouds.yaml and what seed.py made in it (stack.json)."""

    state: Path
    clouds_yaml: Path
    info: dict[str, Any]

    @classmethod
    def load(cls, clouds_yaml: Path) -> Stack:
        info = json.loads((clouds_yaml.parent / "stack.json").read_text())
        return cls(clouds_yaml.parent, clouds_yaml, info)

    def connect(self, cloud: str | None = None):
        """An openstacksdk Connection to `cloud` of this stack's clouds.yaml (default: the
        project member the driver runs as)."""
        import openstack.connection
        from openstack.config import loader

        config = loader.OpenStackConfig(config_files=[str(self.clouds_yaml)], vendor_files=[],
                                        load_envvars=False)
        region = config.get_one(cloud=cloud or self.info["cloud"])
        return openstack.connection.Connection(config=region)

    def auth(self, cloud: str | None = None) -> dict[str, Any]:
        """The `auth` block of one of the clouds (for explicit credentials)."""
        import yaml

        clouds = yaml.safe_load(self.clouds_yaml.read_text())["clouds"]
        return dict(clouds[cloud or self.info["cloud"]]["auth"])


def pytest_collection_modifyitems(config, items):
    """The OpenStack tier runs last, so a background bring-up overlaps everything else."""
    items.sort(key=lambda item: item.get_closest_marker("openstack") is not None)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"OpenStack integration tier: {reason}", pytrace=False)
    pytest.skip(f"OpenStack integration tier: {reason}")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _recorded_alive(state: Path, name: str) -> bool:
    """Whether the process up.sh recorded as `name` still runs (same pid, same start time)."""
    try:
        pid, ticks, _ = (state / "pids" / f"{name}.pid").read_text().split()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return False
    return stat.rsplit(")", 1)[1].split()[19] == ticks


def _status(state: Path) -> str:
    try:
        return (state / "status").read_text().strip()
    except OSError:
        return ""


def _answers(stack: Stack) -> bool:
    from keystoneauth1 import exceptions as ks_exc
    from openstack import exceptions as os_exc

    try:
        stack.connect().authorize()
    except (OSError, ValueError, KeyError, os_exc.SDKException, ks_exc.ClientException):
        return False
    return True


def _wait_for_background(state: Path) -> str:
    deadline = time.monotonic() + BRINGUP_TIMEOUT
    while _status(state) == "starting" and _recorded_alive(state, "up"):
        if time.monotonic() > deadline:
            return f"still starting after {BRINGUP_TIMEOUT:g} s"
        time.sleep(2)
    return _status(state)


@pytest.fixture(scope="session")
def openstack_stack():
    given = os.environ.get("VANTAGE_OS_CLOUDS_YAML")
    if given:
        try:
            stack = Stack.load(Path(given))
        except (OSError, ValueError) as exc:
            _unavailable(f"VANTAGE_OS_CLOUDS_YAML={given}: {exc} (stack.json must be beside it)")
        if not _answers(stack):
            _unavailable(f"the cloud of {given} does not answer")
        yield stack
        return

    state = Path(os.environ.get("VANTAGE_OS_STATE", DEFAULT_STATE))
    env = {**os.environ, "VANTAGE_OS_STATE": str(state)}
    started_here = waited = False
    status = _status(state)
    if status == "starting" and _recorded_alive(state, "up"):
        status, waited = _wait_for_background(state), True
    if status == "ready" and _recorded_alive(state, "keystone") and \
            _answers(Stack.load(state / "clouds.yaml")):
        stack = Stack.load(state / "clouds.yaml")
    elif waited:
        _unavailable(f"the background bring-up in {state} ended {status or 'without a status'}"
                     f":\n{_tail(state / 'logs' / 'up.log')}")
    else:
        # nothing usable there: bring one up for this session
        started_here = True
        try:
            run = subprocess.run([str(HERE / "up.sh"), "--install"], check=False, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 timeout=BRINGUP_TIMEOUT)
            output, failed = run.stdout, run.returncode != 0
        except subprocess.TimeoutExpired as exc:
            output, failed = f"{exc.stdout or ''}\n(timed out after {BRINGUP_TIMEOUT:g} s)", True
        if failed:
            subprocess.run([str(HERE / "down.sh")], env=env, check=False)
            tail = "\n".join(output.splitlines()[-40:])
            _unavailable(f"the test stack could not be installed or brought up "
                         f"(tests/integration/openstack/up.sh --install, as root):\n{tail}")
        stack = Stack.load(state / "clouds.yaml")
    try:
        yield stack
    finally:
        if started_here:
            subprocess.run([str(HERE / "down.sh")], env=env, check=False)
