"""Keystone's content for the test cloud, written through Keystone's own backends in-process
(no API, no tokens): what `keystone-manage bootstrap` makes (domain, admin project and user,
the standard roles), the service role for admin (the services log in as admin and Nova's
external-events API wants that role), a catalog entry for every service, and project
`vantage` with user `vantage` as a plain member, which is what the driver runs as.

Run with the services' venv python after `keystone-manage db_sync` and `fernet_setup`:

    keystone_seed.py KEYSTONE_CONF --admin-password P --user-password P \
        --endpoint identity=http://127.0.0.1:5000/v3 --endpoint compute=... ...
"""
from __future__ import annotations

import argparse
import uuid

import keystone.conf
from keystone import exception
from keystone.cmd import bootstrap
from keystone.common import provider_api, sql

CONF = keystone.conf.CONF
PROVIDERS = provider_api.ProviderAPIs
REGION = "RegionOne"
NAMES = {"identity": "keystone", "compute": "nova", "placement": "placement",
         "image": "glance", "network": "neutron"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--admin-password", required=True)
    parser.add_argument("--user-password", required=True)
    parser.add_argument("--endpoint", action="append", default=[],
                        metavar="TYPE=URL", help="a catalog entry (all three interfaces)")
    args = parser.parse_args()
    endpoints = dict(item.split("=", 1) for item in args.endpoint)

    keystone.conf.configure()
    sql.initialize()
    keystone.conf.set_default_for_default_log_levels()
    CONF([], project="keystone", default_config_files=[args.config])
    keystone.conf.setup_logging()

    boot = bootstrap.Bootstrapper()
    boot.admin_username = "admin"
    boot.admin_password = args.admin_password
    boot.project_name = "admin"
    boot.admin_role_name = "admin"
    boot.service_name = NAMES["identity"]
    boot.region_id = REGION
    boot.public_url = boot.internal_url = boot.admin_url = endpoints.pop("identity")
    boot.immutable_roles = True
    boot.bootstrap()

    grant(boot.admin_user_id, boot.project_id, boot.service_role_id)
    for service_type, url in endpoints.items():
        add_service(service_type, url)

    project_id = uuid.uuid4().hex
    project = PROVIDERS.resource_api.create_project(project_id, {
        "id": project_id, "name": "vantage", "domain_id": boot.default_domain_id,
        "enabled": True, "description": "Vantage integration tests"})
    user = PROVIDERS.identity_api.create_user({
        "name": "vantage", "domain_id": boot.default_domain_id, "enabled": True,
        "password": args.user_password})
    grant(user["id"], project["id"], boot.member_role_id)
    print(f"keystone seeded: admin, project vantage, user vantage, "
          f"{len(endpoints) + 1} services")


def grant(user_id: str, project_id: str, role_id: str) -> None:
    try:
        PROVIDERS.assignment_api.add_role_to_user_and_project(
            user_id=user_id, project_id=project_id, role_id=role_id)
    except exception.Conflict:
        pass


def add_service(service_type: str, url: str) -> None:
    service_id = uuid.uuid4().hex
    PROVIDERS.catalog_api.create_service(service_id, {
        "id": service_id, "type": service_type, "name": NAMES.get(service_type, service_type),
        "enabled": True})
    for interface in ("public", "internal", "admin"):
        endpoint_id = uuid.uuid4().hex
        PROVIDERS.catalog_api.create_endpoint(endpoint_id, {
            "id": endpoint_id, "interface": interface, "url": url, "service_id": service_id,
            "region_id": REGION, "enabled": True})


if __name__ == "__main__":
    main()
