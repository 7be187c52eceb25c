"""A controller whose stored cloud has no installed driver (a driver package removed or not
yet installed on this node) still starts: the cloud shows as failed with the reason, and the
other clouds keep working."""
from __future__ import annotations

import logging

from tests.unit.controller.test_controlplane import (
    DRIVERS,
    Harness,
    ipam_cloud,
    static_cloud,
)
from vantage.controller.controlplane import ControlPlane


async def test_a_cloud_without_its_driver_fails_alone_and_the_controller_starts(
        state_path, caplog):
    h = Harness(state_path)
    try:
        missing = ipam_cloud(h)
        present = static_cloud(h)
        without_openstack = {k: v for k, v in DRIVERS.items() if k != "CLOUD_OPENSTACK"}
        cp = ControlPlane(h.conf, h.services.store, driver_classes=without_openstack,
                          controller_url="https://127.0.0.1:9", controller_ca=None,
                          secrets_of=h.services.objects.decrypted_secrets)
        with caplog.at_level(logging.ERROR, logger="vantage"):
            cp.load_drivers()
        assert missing["uuid"] not in cp.drivers
        assert present["uuid"] in cp.drivers
        assert any("CLOUD_OPENSTACK" in r.getMessage() and "os" in r.getMessage()
                   for r in caplog.records)
        runtime = cp.cloud_runtime(missing["uuid"], missing)
        assert runtime["state"] == "CLOUD_STATE_FAILED"
        assert "CLOUD_OPENSTACK" in runtime["reason"] and "no installed driver" in \
            runtime["reason"]
        assert cp.cloud_runtime(present["uuid"], present)["state"] != "CLOUD_STATE_FAILED"
        for driver in cp.drivers.values():
            driver.close()
    finally:
        await h.close()
