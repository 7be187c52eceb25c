"""The local cloud driver's mode selection and its checks, without a cloud to talk to."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from vantage.cloud.base import CloudConfigError, ReturnPath
from vantage.cloud.local import LocalDriver, controller_address, vip_network
from vantage.conf import build_conf


def conf_with(tmp_path, **local_cloud):
    conf = build_conf([])
    conf.set_override("state_path", str(tmp_path))
    for name, value in local_cloud.items():
        conf.set_override(name, value, group="local_cloud")
    return conf


def test_process_mode_is_the_default(tmp_path):
    conf = conf_with(tmp_path)
    driver = LocalDriver({}, state_path=str(tmp_path), conf=conf)
    assert driver.mode == "process" and driver.net is None
    assert vip_network(conf) == "127.100.0.0/16"
    assert controller_address(conf) is None
    assert driver.return_path() is ReturnPath.ASYMMETRIC


def test_netns_mode_takes_vips_and_the_controller_address_from_the_bridge_network(tmp_path):
    conf = conf_with(tmp_path, mode="netns", netns_network="10.231.9.0/24")
    assert vip_network(conf) == "10.231.9.128/25"
    assert controller_address(conf) == "10.231.9.1"
    driver = LocalDriver({}, state_path=str(tmp_path), conf=conf)
    assert driver.net.bridge == "vantage-br0"


def test_a_bad_netns_network_stops_the_driver_at_construction(tmp_path):
    conf = conf_with(tmp_path, mode="netns", netns_network="8.8.8.0/24")
    with pytest.raises(CloudConfigError, match=r"\[local_cloud\] netns_network"):
        LocalDriver({}, state_path=str(tmp_path), conf=conf)


def test_netns_mode_without_root_names_the_mode_option(tmp_path):
    """validate() in a real unprivileged process (uid 65534, allowed only to read the
    interpreter and the code under /root)."""
    code = ("from vantage.cloud.local import LocalDriver; from vantage.conf import build_conf\n"
            "conf = build_conf([]); conf.set_override('mode', 'netns', group='local_cloud')\n"
            f"d = LocalDriver({{}}, state_path={str(tmp_path / 'state')!r}, conf=conf)\n"
            "try:\n    d.validate()\nexcept Exception as e:\n"
            "    print(type(e).__name__, e.field, '|', e.reason)\n")
    command = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv (util-linux) to drop root")
        os.chmod(tmp_path, 0o777)
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                   "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd="/",
                            check=False)
    assert result.stdout.startswith("CloudConfigError [local_cloud] mode |"), result.stderr
    assert "needs root" in result.stdout
