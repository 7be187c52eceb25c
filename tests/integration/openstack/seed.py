"""What the driver's tests find in the test cloud, made through openstacksdk as its admin once
the services answer: the compute host mapped to cell1, quotas roomy enough for a test run, a
Glance image for SEs, SE flavors, an external flat network `public`, project vantage's
management and VIP networks, and a router between the VIP subnet and `public` so floating IPs
can be associated. Writes STATE/stack.json naming all of it.

Run by up.sh with OS_CLIENT_CONFIG_FILE pointing at STATE/clouds.yaml.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openstack
import openstack.exceptions

IMAGE = "vantage-se"
FLAVORS = {"vantage.se.small": (1, 2048, 10), "vantage.se.medium": (2, 4096, 20)}
EXTERNAL = ("public", "public-subnet", "203.0.113.0/24")
# loopback ranges: an SE the tests start on this host from a server's user data can bind
# addresses Neutron hands out for it (nothing else ever carries packets for these networks)
MGMT = ("vantage-mgmt", "vantage-mgmt-subnet", "127.87.0.0/24")
VIP = ("vantage-vip", "vantage-vip-subnet", "127.88.0.0/24")
ROUTER = "vantage-router"


def wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except openstack.exceptions.SDKException as exc:
            value, last = None, exc
        if value:
            return value
        time.sleep(1)
    raise SystemExit(f"timed out after {timeout:g} s waiting for {what}"
                     + (f" (last error: {last})" if last else ""))


def log(message: str) -> None:
    print(f"[seed {time.strftime('%T')}] {message}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", required=True, type=Path)
    parser.add_argument("--compute-host", required=True)
    parser.add_argument("--nova-manage", required=True, help="nova-manage command line")
    args = parser.parse_args()

    admin = openstack.connect(cloud="vantage-admin")
    wait(lambda: admin.authorize(), 120, "a Keystone token")
    project = admin.identity.find_project("vantage", ignore_missing=False)

    # nova-compute registers itself; cell1 learns about it from discover_hosts
    wait(lambda: [s for s in admin.compute.services(binary="nova-compute")
                  if s.host == args.compute_host and s.state == "up"],
         180, f"nova-compute on {args.compute_host} to report up")
    subprocess.run([*shlex.split(args.nova_manage), "cell_v2", "discover_hosts", "--verbose"],
                   check=True)
    wait(lambda: list(admin.compute.hypervisors()), 60, "the fake hypervisor to be listed")
    wait(lambda: list(admin.placement.resource_providers()), 60,
         "the compute node's resource provider in Placement")
    log("compute host mapped")

    admin.set_compute_quotas(project.id, instances=100, cores=1000, ram=1_000_000)
    admin.network.update_quota(project.id, port=500, security_group=200,
                               security_group_rule=2000, floatingip=200, network=50,
                               subnet=50, router=10)

    image = admin.image.create_image(name=IMAGE, disk_format="raw", container_format="bare",
                                     visibility="public", data=b"vantage SE test image\n",
                                     validate_checksum=False)
    image = wait(lambda: [i for i in [admin.image.get_image(image.id)] if i.status == "active"],
                 60, f"image {IMAGE} to be active")[0]
    for name, (vcpus, ram, disk) in FLAVORS.items():
        admin.compute.create_flavor(name=name, vcpus=vcpus, ram=ram, disk=disk,
                                    is_public=True)
    log("image and flavors made")

    net_name, subnet_name, cidr = EXTERNAL
    public = admin.network.create_network(name=net_name, is_router_external=True,
                                          provider_network_type="flat",
                                          provider_physical_network="public")
    public_subnet = admin.network.create_subnet(name=subnet_name, network_id=public.id,
                                                ip_version=4, cidr=cidr, is_dhcp_enabled=False)
    made = {}
    for net_name, subnet_name, cidr in (MGMT, VIP):
        network = admin.network.create_network(name=net_name, project_id=project.id)
        subnet = admin.network.create_subnet(name=subnet_name, network_id=network.id,
                                             project_id=project.id, ip_version=4, cidr=cidr,
                                             is_dhcp_enabled=False)
        made[net_name] = {"network": network.id, "subnet": subnet.id, "cidr": cidr}
    router = admin.network.create_router(name=ROUTER, project_id=project.id,
                                         external_gateway_info={"network_id": public.id})
    admin.network.add_interface_to_router(router, subnet_id=made[VIP[0]]["subnet"])
    log("networks and router made")

    stack = {
        "clouds_yaml": str(args.state / "clouds.yaml"),
        "cloud": "vantage",
        "admin_cloud": "vantage-admin",
        "project_id": project.id,
        "compute_host": args.compute_host,
        "image": {"name": IMAGE, "id": image.id},
        "flavors": {name: admin.compute.find_flavor(name, ignore_missing=False).id
                    for name in FLAVORS},
        "external_network": {"name": EXTERNAL[0], "network": public.id,
                             "subnet": public_subnet.id, "cidr": EXTERNAL[2]},
        "mgmt_network": {"name": MGMT[0], **made[MGMT[0]]},
        "vip_network": {"name": VIP[0], **made[VIP[0]]},
        "router": {"name": ROUTER, "id": router.id},
    }
    (args.state / "stack.json").write_text(json.dumps(stack, indent=2) + "\n")
    log(f"wrote {args.state / 'stack.json'}")


if __name__ == "__main__":
    main()
