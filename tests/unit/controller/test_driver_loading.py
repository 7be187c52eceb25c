"""Cloud failures the operator must see: a controller whose stored cloud has no installed
driver (a driver package removed or not yet installed on this node) still starts, the cloud
shown as failed with the reason while the other clouds keep working; and an SE the cloud
cannot create (quota, image, no valid host) shows why on the cloud's runtime too."""
from __future__ import annotations

import logging

import pytest

from tests.unit.controller.test_controlplane import (
    DRIVERS,
    Harness,
    data_network,
    group,
    ipam_cloud,
    static_cloud,
    vs_on,
)
from vantage.cloud.base import CloudError
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


@pytest.fixture
async def h(state_path):
    harness = Harness(state_path)
    yield harness
    await harness.close()


async def test_a_failed_se_create_shows_its_reason_on_the_cloud_runtime(h):
    cloud = static_cloud(h)
    net = data_network(h, cloud, ranges=[("10.1.0.10", "10.1.0.20", "STATIC_IPS_FOR_VIP")])
    grp = group(h, cloud, "full", max_se=1)
    vsvip = h.create("vsvip", {"name": "full", "cloud_ref": cloud["url"], "vip": [
        {"vip_id": "0", "auto_allocate_ip": True, "network_ref": net["url"]}]})
    vs_on(h, "vs-full", grp, vsvip)
    with h.services.store.begin() as tx:
        driver = h.cp.drivers[cloud["uuid"]] = h.cp.make_driver(tx.get(cloud["uuid"]))
    quota = "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances"

    def refuse(spec):
        driver.calls.append(("create_se", spec.se_uuid))
        raise CloudError(quota)
    driver.create_se = refuse
    await h.passes(1)
    failure = h.cp.cloud_runtime(cloud["uuid"], cloud)["last_se_create_failure"]
    assert failure["reason"] == quota and "full" in failure["se_name"]
    [se] = [r for r in h.cp.ses.values() if r.group == grp["uuid"]]
    assert (se.state, se.reason) == ("failed", quota)

    del driver.create_se  # the cloud has room again: the next create clears it
    await h.passes(3)
    assert h.cp.cloud_runtime(cloud["uuid"], cloud)["last_se_create_failure"] is None
