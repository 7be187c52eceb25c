"""The built-in local cloud: Service Engines are `vantage-se` processes on the controller's host.

Process mode (default, no root needed): every SE is a child process; VIPs come from a loopback
range (127.100.0.0/16 by default), which Linux routes to `lo` without any address setup, so
several SEs can serve different VIPs side by side. SE state lives under
`<state_path>/ses/<se uuid>/` (bootstrap data, credentials, last configuration, pid, output), so
a controller restart finds and adopts the processes it started instead of starting new ones.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vantage.cloud.base import CloudDriver, CloudError, ReturnPath, SeInfo, SeSpec, SeState

LOG = logging.getLogger("vantage.cloud.local")


class LocalDriver(CloudDriver):
    vtype = "CLOUD_NONE"

    def __init__(self, cloud: dict[str, Any], *, state_path: str, conf=None,
                 se_command: list[str] | None = None, se_args: list[str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(cloud)
        self.base = Path(state_path) / "ses"
        self.se_command = se_command or [sys.executable, "-m", "vantage.se.cmd"]
        if se_args is None and conf is not None:
            se_args = list(conf.local_cloud.se_extra_args)
        self.se_args = se_args or []
        #: processes started by this controller, by SE uuid (so they are reaped)
        self._children: dict[str, subprocess.Popen] = {}

    def validate(self) -> None:
        try:
            self.base.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise CloudError(f"cannot create {self.base}: {exc.strerror}") from None

    def return_path(self) -> ReturnPath:
        return ReturnPath.ASYMMETRIC

    def _dir(self, se_uuid: str) -> Path:
        return self.base / se_uuid

    def _pid(self, se_uuid: str) -> int | None:
        try:
            return int((self._dir(se_uuid) / "pid").read_text())
        except (OSError, ValueError):
            return None

    def _alive(self, se_uuid: str, pid: int | None) -> bool:
        if pid is None:
            return False
        child = self._children.get(se_uuid)
        if child is not None and child.pid == pid:
            return child.poll() is None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        # the pid must still be our SE, not a recycled pid
        return se_uuid.encode() in cmdline

    def create_se(self, spec: SeSpec) -> SeInfo:
        directory = self._dir(spec.se_uuid)
        pid = self._pid(spec.se_uuid)
        if self._alive(spec.se_uuid, pid):
            return SeInfo(spec.se_uuid, SeState.RUNNING, external_id=str(pid), mgmt_ip="127.0.0.1")
        if spec.bootstrap is None:
            raise CloudError("an SE needs bootstrap data")
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        bootstrap_file = directory / "bootstrap.json"
        fd = os.open(bootstrap_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(spec.bootstrap.as_dict(), f)
        command = [*self.se_command, "--bootstrap", str(bootstrap_file), "--state-dir",
                   str(directory), "--stats-listen", "none", "--request-log", "none",
                   *self.se_args]
        output = open(directory / "se.log", "ab")
        try:
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     close_fds=True)
        except OSError as exc:
            raise CloudError(f"cannot start {command[0]}: {exc.strerror}") from None
        finally:
            output.close()
        self._children[spec.se_uuid] = child
        (directory / "pid").write_text(str(child.pid))
        LOG.info("started SE %s (%s) as pid %d", spec.name, spec.se_uuid, child.pid)
        return SeInfo(spec.se_uuid, SeState.CREATING, external_id=str(child.pid),
                      mgmt_ip="127.0.0.1")

    def get_se(self, se_uuid: str) -> SeInfo:
        pid = self._pid(se_uuid)
        if pid is None:
            return SeInfo(se_uuid, SeState.MISSING, reason="no such SE process")
        if self._alive(se_uuid, pid):
            return SeInfo(se_uuid, SeState.RUNNING, external_id=str(pid), mgmt_ip="127.0.0.1")
        child = self._children.get(se_uuid)
        code = child.poll() if child is not None else None
        reason = f"SE process {pid} exited" + (f" with status {code}" if code is not None else "")
        return SeInfo(se_uuid, SeState.STOPPED, external_id=str(pid), reason=reason)

    def delete_se(self, se_uuid: str) -> None:
        pid = self._pid(se_uuid)
        if self._alive(se_uuid, pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 5
            while self._alive(se_uuid, pid) and time.monotonic() < deadline:
                self._reap(se_uuid)
                time.sleep(0.05)
            if self._alive(se_uuid, pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._reap(se_uuid, wait=True)
        shutil.rmtree(self._dir(se_uuid), ignore_errors=True)
        LOG.info("deleted SE %s", se_uuid)

    def _reap(self, se_uuid: str, wait: bool = False) -> None:
        child = self._children.get(se_uuid)
        if child is None:
            return
        try:
            child.wait(timeout=1 if wait else 0)
        except subprocess.TimeoutExpired:
            return
        self._children.pop(se_uuid, None)

    def plumb_vip(self, se_uuid: str, vip: str, *, primary: bool = True) -> None:
        # 127.0.0.0/8 is routed to `lo` as a whole: a loopback VIP needs no plumbing
        if not vip.startswith("127."):
            raise CloudError(f"VIP {vip} is not a loopback address; the local cloud in process "
                             "mode serves VIPs from its loopback range only")

    def unplumb_vip(self, se_uuid: str, vip: str) -> None:
        return None

    def adopt_all(self) -> list[str]:
        """SE uuids with a live process from an earlier controller run."""
        if not self.base.exists():
            return []
        return [d.name for d in self.base.iterdir()
                if d.is_dir() and self._alive(d.name, self._pid(d.name))]

    def close(self) -> None:
        for se_uuid in list(self._children):
            self._reap(se_uuid)
