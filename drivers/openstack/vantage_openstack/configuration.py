"""`openstack_configuration` checked field by field, and the openstacksdk Connection it makes.

Checks that need no cloud happen here (which credentials are missing, a CA that is not PEM,
GIVEN groups without groups); checks against the cloud (image, flavor, networks) are the
driver's `validate`. Every error is a CloudConfigError naming the field.
"""
from __future__ import annotations

import ipaddress
import os
import ssl
import tempfile
from collections.abc import Mapping
from typing import Any

import openstack
import openstack.connection
import openstack.exceptions
import pydantic

from vantage.cloud.base import CloudConfigError
from vantage.model.base import error_path
from vantage.model.cloud import OpenStackConfiguration

FIELD = "openstack_configuration"


def parse(cloud: Mapping[str, Any]) -> OpenStackConfiguration:
    """The validated configuration of a CLOUD_OPENSTACK cloud object.

    :raises CloudConfigError: naming the bad field.
    """
    body = cloud.get(FIELD)
    if not isinstance(body, Mapping):
        raise CloudConfigError(FIELD, "is required for a CLOUD_OPENSTACK cloud")
    try:
        config = OpenStackConfiguration.model_validate(dict(body))
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        raise CloudConfigError(f"{FIELD}.{error_path(tuple(first['loc']))}",
                               first["msg"]) from None
    if not config.cloud:
        for field, what in (("auth_url", ("the Keystone v3 URL, e.g. "
                                          "https://keystone.example.com:5000/v3")),
                            ("username", "the user the controller logs in as"),
                            ("password", "that user's password")):
            if not getattr(config, field):
                raise CloudConfigError(f"{FIELD}.{field}", f"give {what}, or name a clouds.yaml "
                                       f"entry in {FIELD}.cloud")
        if not (config.project_name or config.admin_tenant):
            raise CloudConfigError(f"{FIELD}.project_name", "give the project SEs are created "
                                   "in (project_name or admin_tenant), or name a clouds.yaml "
                                   f"entry in {FIELD}.cloud")
    if config.ca_certificate:
        try:
            ssl.create_default_context(cadata=config.ca_certificate)
        except (ssl.SSLError, ValueError) as exc:
            raise CloudConfigError(f"{FIELD}.ca_certificate",
                                   f"not a PEM certificate: {exc}") from None
        if config.insecure:
            raise CloudConfigError(f"{FIELD}.insecure", "set either ca_certificate (verify "
                                   "against it) or insecure (verify nothing), not both")
    if config.security_group_mode == "GIVEN" and not config.security_groups:
        raise CloudConfigError(f"{FIELD}.security_groups", "security_group_mode GIVEN needs "
                               "the groups (names or IDs) to put on SE ports")
    for index, cidr in enumerate(config.se_ingress_cidrs):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise CloudConfigError(f"{FIELD}.se_ingress_cidrs[{index}]",
                                   f"{cidr!r} is not a CIDR such as 0.0.0.0/0") from None
    for index, ports in enumerate(config.se_ingress_ports):
        low, _, high = ports.partition("-")
        if not 1 <= int(low) <= int(high or low) <= 65535:
            raise CloudConfigError(f"{FIELD}.se_ingress_ports[{index}]",
                                   f"{ports!r} is not a port or range within 1-65535")
    return config


def ingress_port_ranges(config: OpenStackConfiguration) -> list[tuple[int, int]]:
    """The (min, max) TCP/UDP port ranges of the per-SE security group."""
    if not config.se_ingress_ports:
        return [(1, 65535)]
    ranges = []
    for ports in config.se_ingress_ports:
        low, _, high = ports.partition("-")
        ranges.append((int(low), int(high or low)))
    return ranges


class ConnectionMaker:
    """Builds the openstacksdk Connection of one configuration; owns the CA file it needs
    (keystoneauth verifies against a file path, not PEM text)."""

    def __init__(self, config: OpenStackConfiguration) -> None:
        self.config = config
        self._ca_dir: tempfile.TemporaryDirectory[str] | None = None

    def _ca_file(self) -> str:
        if self._ca_dir is None:
            self._ca_dir = tempfile.TemporaryDirectory(prefix="vantage-openstack-")
        path = os.path.join(self._ca_dir.name, "ca.pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
            out.write(self.config.ca_certificate or "")
        return path

    def __call__(self) -> openstack.connection.Connection:
        config = self.config
        verify: bool | str = True
        if config.insecure:
            verify = False
        elif config.ca_certificate:
            verify = self._ca_file()
        if config.cloud:
            extra: dict[str, Any] = {}
            if config.region:
                extra["region_name"] = config.region
            if config.ca_certificate or config.insecure:
                extra["verify"] = verify
            try:
                return openstack.connect(cloud=config.cloud, app_name="vantage", **extra)
            except openstack.exceptions.ConfigException as exc:
                raise CloudConfigError(f"{FIELD}.cloud", f"no usable cloud {config.cloud!r} in "
                                       f"clouds.yaml on the controller host: {exc}") from None
        return openstack.connection.Connection(
            auth_type="password", auth_url=config.auth_url, username=config.username,
            password=config.password, project_name=config.project_name or config.admin_tenant,
            user_domain_name=config.user_domain_name,
            project_domain_name=config.project_domain_name, region_name=config.region,
            interface=config.interface, identity_api_version="3", verify=verify,
            app_name="vantage")

    def close(self) -> None:
        if self._ca_dir is not None:
            self._ca_dir.cleanup()
            self._ca_dir = None
