"""A small in-memory Keystone, Nova, Neutron and Glance behind requests-mock, for the unit tier
of the OpenStack driver.

openstacksdk's `ConnectionFixture` provides the token and service catalog
(https://<service>.example.com); this module answers the REST calls the driver makes with the
status codes and error bodies the real services use, so the real openstacksdk code parses them
and raises its real exceptions. It keeps state (ports, groups, servers, floating IPs), filters
lists as Neutron and Nova do for the parameters the driver sends, records every call, and lets a
test inject a failure for the next call of a kind. The integration tier
(tests/integration/openstack/) runs the driver against the real services.
"""
from __future__ import annotations

import ipaddress
import itertools
import json
import re
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import requests_mock
from openstack.fixture.connection import ConnectionFixture

IDENTITY = "https://identity.example.com"
COMPUTE = "https://compute.example.com/v2.1"
NETWORK = "https://network.example.com/v2.0"
IMAGE = "https://image.example.com/v2"

#: Neutron collection in the URL -> (singular key, plural key)
_NEUTRON = {
    "ports": ("port", "ports"),
    "networks": ("network", "networks"),
    "subnets": ("subnet", "subnets"),
    "security-groups": ("security_group", "security_groups"),
    "security-group-rules": ("security_group_rule", "security_group_rules"),
    "floatingips": ("floatingip", "floatingips"),
}


def _new_id() -> str:
    return str(uuid.uuid4())


class FakeOpenStack:
    """State and REST answers of one project in one region."""

    def __init__(self) -> None:
        self.fixture = ConnectionFixture(project_id="project-1")
        self.fixture.setUp()
        self.project_id = self.fixture.project_id
        self.calls: list[tuple[str, str, str, Any]] = []
        self.neutron: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in _NEUTRON}
        self.servers: dict[str, dict[str, Any]] = {}
        self.flavors: dict[str, dict[str, Any]] = {}
        self.images: dict[str, dict[str, Any]] = {}
        self.zones = ["nova"]
        #: (method, service, collection) -> [(status, message)]: answered instead, once each
        self.failures: dict[tuple[str, str, str], list[tuple[int, str]]] = {}
        #: what servers become after `build_polls` reads: "ACTIVE" or "ERROR"
        self.server_outcome = "ACTIVE"
        self.server_fault = {"code": 500, "message": "No valid host was found. There are not "
                                                    "enough hosts available."}
        self.build_polls = 1
        #: networks whose subnets have no router to the external network
        self.unrouted: set[str] = set()
        self.reject_login = False
        #: services ("network", "compute", "image") whose connections are refused
        self.unreachable: set[str] = set()
        #: what Neutron does with tags sent in a create: keep them, "ignore" or "reject" them
        self.tags_on_create: bool | str = True
        self.quota = {"port": 100}
        self._macs = itertools.count(1)
        self.mocker: requests_mock.Mocker | None = None
        self.default_group = self._add("security-groups", {
            "name": "default", "description": "default", "tags": [],
            "security_group_rules": []})

    # -- setup ----------------------------------------------------------------------------

    def start(self) -> FakeOpenStack:
        mocker = self.mocker = requests_mock.Mocker()
        mocker.start()
        mocker.register_uri(requests_mock.ANY, re.compile(re.escape(NETWORK) + "/"),
                            json=self._neutron_call)
        mocker.register_uri(requests_mock.ANY, re.compile(re.escape(COMPUTE) + "/."),
                            json=self._nova_call)
        mocker.register_uri(requests_mock.ANY, re.compile(re.escape(IMAGE) + "/"),
                            json=self._glance_call)
        mocker.get(f"{IDENTITY}/", json={"versions": {"values": [{
            "id": "v3.14", "status": "stable",
            "links": [{"href": f"{IDENTITY}/v3/", "rel": "self"}]}]}})
        mocker.post(f"{IDENTITY}/v3/auth/tokens", json=self._token)
        mocker.get(f"{COMPUTE}/", json={"version": {
            "id": "v2.1", "status": "CURRENT", "min_version": "2.1", "version": "2.96",
            "links": [{"href": f"{COMPUTE}/", "rel": "self"}]}})
        mocker.get("https://network.example.com/", json={"versions": [{
            "id": "v2.0", "status": "CURRENT", "links": [{"href": f"{NETWORK}/", "rel": "self"}]}]})
        mocker.get("https://image.example.com/", json={"versions": [{
            "id": "v2.16", "status": "CURRENT", "links": [{"href": f"{IMAGE}/", "rel": "self"}]}]})
        return self

    def stop(self) -> None:
        if self.mocker is not None:
            self.mocker.stop()
        self.fixture.cleanUp()

    def connection(self, **overrides: Any):
        import openstack.connection
        kwargs = {"auth_url": f"{IDENTITY}/", "username": "vantage", "password": "secret",
                  "project_name": "lb", "user_domain_name": "Default",
                  "project_domain_name": "Default", "region_name": "RegionOne",
                  "identity_api_version": "3", **overrides}
        return openstack.connection.Connection(**kwargs)

    def add_network(self, name: str, cidr: str, *, external: bool = False,
                    pools: list[tuple[str, str]] | None = None) -> dict[str, Any]:
        net = self._add("networks", {"name": name, "router:external": external, "tags": [],
                                     "status": "ACTIVE", "subnets": [], "shared": False})
        subnet_net = ipaddress.ip_network(cidr)
        hosts = list(itertools.islice(subnet_net.hosts(), 2, None))
        pools = pools or [(str(hosts[0]), str(hosts[-1]))]
        subnet = self._add("subnets", {
            "name": f"{name}-subnet", "network_id": net["id"], "cidr": cidr, "tags": [],
            "ip_version": subnet_net.version,
            "allocation_pools": [{"start": s, "end": e} for s, e in pools]})
        net["subnets"].append(subnet["id"])
        return net

    def add_flavor(self, name: str, vcpus: int, ram: int, disk: int, *,
                   disabled: bool = False) -> dict[str, Any]:
        flavor = {"id": _new_id(), "name": name, "vcpus": vcpus, "ram": ram, "disk": disk,
                  "OS-FLV-DISABLED:disabled": disabled, "os-flavor-access:is_public": True,
                  "OS-FLV-EXT-DATA:ephemeral": 0, "swap": 0, "rxtx_factor": 1.0}
        self.flavors[flavor["id"]] = flavor
        return flavor

    def add_image(self, name: str, status: str = "active") -> dict[str, Any]:
        image = {"id": _new_id(), "name": name, "status": status, "visibility": "private",
                 "disk_format": "qcow2", "container_format": "bare", "tags": []}
        self.images[image["id"]] = image
        return image

    def fail_next(self, method: str, service: str, collection: str, status: int,
                  message: str) -> None:
        """Answer the next `method` on `collection` ("ports", "servers") with an error."""
        self.failures.setdefault((method, service, collection), []).append((status, message))

    # -- views for assertions --------------------------------------------------------------

    def ports(self, **match: Any) -> list[dict[str, Any]]:
        return [p for p in self.neutron["ports"].values()
                if all(p.get(k) == v for k, v in match.items())]

    def groups(self) -> list[dict[str, Any]]:
        return [g for g in self.neutron["security-groups"].values() if g["name"] != "default"]

    def floating_ips(self) -> list[dict[str, Any]]:
        return list(self.neutron["floatingips"].values())

    def requests(self, method: str, service: str, collection: str) -> list[Any]:
        """Bodies of the calls made to `collection` with `method`."""
        return [body for m, s, path, body in self.calls
                if m == method and s == service and path.split("/")[0] == collection]

    # -- keystone --------------------------------------------------------------------------

    def _token(self, request, context):
        if self.reject_login:
            context.status_code = 401
            return {"error": {"code": 401, "title": "Unauthorized",
                              "message": "The request you have made requires authentication."}}
        context.status_code = 201
        context.headers["X-Subject-Token"] = "token-" + _new_id()
        return self.fixture.v3_token

    # -- neutron ---------------------------------------------------------------------------

    def _add(self, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        item = {"id": _new_id(), "project_id": self.project_id, "tenant_id": self.project_id,
                "revision_number": 1, "description": "", **body}
        self.neutron[collection][item["id"]] = item
        return item

    def _record(self, service: str, request) -> tuple[list[str], dict[str, list[str]], Any]:
        parts = urlsplit(request.url)
        base = {"network": NETWORK, "compute": COMPUTE, "image": IMAGE}[service]
        path = parts.path[len(urlsplit(base).path):].strip("/")
        body = json.loads(request.body) if request.body else None
        self.calls.append((request.method, service, path, body))
        if service in self.unreachable:
            raise requests.exceptions.ConnectionError(f"{service}: connection refused")
        return path.split("/"), parse_qs(parts.query), body

    def _injected(self, method: str, service: str, collection: str):
        queue = self.failures.get((method, service, collection))
        return queue.pop(0) if queue else None

    @staticmethod
    def _neutron_error(context, status: int, kind: str, message: str):
        context.status_code = status
        return {"NeutronError": {"type": kind, "message": message, "detail": ""}}

    def _neutron_call(self, request, context):
        path, query, body = self._record("network", request)
        collection = path[0]
        failure = self._injected(request.method, "network", collection)
        if failure:
            return self._neutron_error(context, failure[0], "Injected", failure[1])
        if collection not in _NEUTRON:
            return self._neutron_error(context, 404, "HTTPNotFound", "no such resource")
        single, plural = _NEUTRON[collection]
        store = self.neutron[collection]
        item = store.get(path[1]) if len(path) > 1 else None
        if len(path) > 1 and item is None:
            return self._neutron_error(context, 404, f"{single.title()}NotFound",
                                       f"{single} {path[1]} could not be found.")
        if request.method == "GET" and item is None:
            return {plural: [i for i in store.values() if self._matches(i, query)]}
        if request.method == "GET":
            return {single: item}
        if request.method == "POST":
            return self._neutron_create(context, collection, body[single])
        if request.method == "PUT" and len(path) == 3 and path[2] == "tags":
            item["tags"] = list(body["tags"])
            return {"tags": item["tags"]}
        if request.method == "PUT":
            return self._neutron_update(request, context, collection, item, body[single])
        if request.method == "DELETE":
            return self._neutron_delete(context, collection, item)
        return self._neutron_error(context, 405, "HTTPMethodNotAllowed", request.method)

    @staticmethod
    def _matches(item: dict[str, Any], query: dict[str, list[str]]) -> bool:
        for key, values in query.items():
            if key in ("fields", "sort_key", "sort_dir", "limit", "marker"):
                continue
            if key == "tags":
                wanted = {t for v in values for t in v.split(",")}
                if not wanted <= set(item.get("tags") or ()):
                    return False
            elif key == "fixed_ips":
                for value in values:
                    field, _, wanted = value.partition("=")
                    if not any(f.get(field) == wanted for f in item.get("fixed_ips") or ()):
                        return False
            elif str(item.get(key)) not in values:
                return False
        return True

    def _allocate(self, subnet: dict[str, Any]) -> str:
        used = {f["ip_address"] for p in self.neutron["ports"].values()
                for f in p["fixed_ips"]} | \
            {f["floating_ip_address"] for f in self.neutron["floatingips"].values()}
        for pool in subnet["allocation_pools"]:
            start, end = (int(ipaddress.ip_address(pool[k])) for k in ("start", "end"))
            for value in range(start, end + 1):
                address = str(ipaddress.ip_address(value))
                if address not in used:
                    return address
        raise LookupError(subnet["id"])

    def _neutron_create(self, context, collection: str, attrs: dict[str, Any]):
        single = _NEUTRON[collection][0]
        attrs = dict(attrs)
        if self.tags_on_create == "reject" and "tags" in attrs:
            return self._neutron_error(context, 400, "HTTPBadRequest",
                                       "Unrecognized attribute(s) 'tags'")
        if self.tags_on_create == "ignore":
            attrs.pop("tags", None)
        attrs.setdefault("tags", [])
        if collection == "ports":
            return self._create_port(context, attrs)
        if collection == "security-groups":
            item = self._add(collection, {**attrs, "security_group_rules": []})
            for ethertype in ("IPv4", "IPv6"):  # Neutron's default egress rules
                self._add_rule(item, {"direction": "egress", "ethertype": ethertype,
                                      "protocol": None, "port_range_min": None,
                                      "port_range_max": None, "remote_ip_prefix": None})
        elif collection == "security-group-rules":
            group = self.neutron["security-groups"].get(attrs["security_group_id"])
            if group is None:
                return self._neutron_error(context, 404, "SecurityGroupNotFound", "no group")
            rule = {k: attrs.get(k) for k in ("direction", "ethertype", "protocol",
                                              "port_range_min", "port_range_max",
                                              "remote_ip_prefix")}
            for existing in group["security_group_rules"]:
                if all(existing.get(k) == v for k, v in rule.items()):
                    return self._neutron_error(
                        context, 409, "SecurityGroupRuleExists",
                        f"Security group rule already exists. Rule id is {existing['id']}.")
            item = self._add_rule(group, rule)
        elif collection == "floatingips":
            return self._create_floating_ip(context, attrs)
        else:
            item = self._add(collection, attrs)
        context.status_code = 201
        return {single: item}

    def _add_rule(self, group: dict[str, Any], rule: dict[str, Any]) -> dict[str, Any]:
        item = self._add("security-group-rules", {**rule, "security_group_id": group["id"]})
        group["security_group_rules"].append(item)
        return item

    def _create_port(self, context, attrs: dict[str, Any]):
        if len(self.neutron["ports"]) >= self.quota["port"]:
            return self._neutron_error(context, 409, "OverQuota",
                                       "Quota exceeded for resources: ['port'].")
        network = self.neutron["networks"].get(attrs.get("network_id"))
        if network is None:
            return self._neutron_error(context, 404, "NetworkNotFound",
                                       f"Network {attrs.get('network_id')} could not be found.")
        subnets = [self.neutron["subnets"][s] for s in network["subnets"]]
        fixed = []
        for wanted in attrs.pop("fixed_ips", None) or [{}]:
            subnet = next((s for s in subnets if s["id"] == wanted.get("subnet_id")
                           or (not wanted.get("subnet_id") and (
                               not wanted.get("ip_address") or ipaddress.ip_address(
                                   wanted["ip_address"]) in ipaddress.ip_network(s["cidr"])))),
                          None)
            if subnet is None:
                return self._neutron_error(context, 400, "InvalidInput",
                                           "no subnet of the network holds the address")
            address = wanted.get("ip_address")
            if address and self.ports(network_id=network["id"]) and any(
                    f["ip_address"] == address for p in self.ports(network_id=network["id"])
                    for f in p["fixed_ips"]):
                return self._neutron_error(
                    context, 409, "IpAddressAlreadyAllocated",
                    f"IP address {address} already allocated in subnet {subnet['id']}")
            fixed.append({"subnet_id": subnet["id"],
                          "ip_address": address or self._allocate(subnet)})
        port = self._add("ports", {
            "name": "", "device_id": "", "device_owner": "", "status": "DOWN",
            "admin_state_up": True, "port_security_enabled": True,
            "mac_address": f"fa:16:3e:00:00:{next(self._macs):02x}",
            "allowed_address_pairs": [], "security_groups": [self.default_group["id"]],
            **attrs, "fixed_ips": fixed})
        context.status_code = 201
        return {"port": port}

    def _create_floating_ip(self, context, attrs: dict[str, Any]):
        external = self.neutron["networks"].get(attrs.get("floating_network_id"))
        if external is None or not external["router:external"]:
            return self._neutron_error(context, 404, "ExternalNetworkNotFound",
                                       "no such external network")
        port = self.neutron["ports"].get(attrs.get("port_id") or "")
        if port is not None and port["network_id"] in self.unrouted:
            return self._neutron_error(
                context, 404, "ExternalGatewayForFloatingIPNotFound",
                f"External network {external['id']} is not reachable from subnet "
                f"{port['fixed_ips'][0]['subnet_id']}.")
        subnet = self.neutron["subnets"][external["subnets"][0]]
        address = attrs.pop("floating_ip_address", None) or self._allocate(subnet)
        item = self._add("floatingips", {
            "floating_ip_address": address, "status": "DOWN", "router_id": None,
            "fixed_ip_address": None, "port_id": None, **attrs})
        if port is not None and not item["fixed_ip_address"]:
            item["fixed_ip_address"] = port["fixed_ips"][0]["ip_address"]
        context.status_code = 201
        return {"floatingip": item}

    def _neutron_update(self, request, context, collection: str, item: dict[str, Any],
                        attrs: dict[str, Any]):
        single = _NEUTRON[collection][0]
        match = request.headers.get("If-Match")
        if match and match != f"revision_number={item['revision_number']}":
            return self._neutron_error(
                context, 412, "RevisionNumberConstraintFailed",
                f"Constrained to {match}, but current revision is {item['revision_number']}")
        if "allowed_address_pairs" in attrs:
            pairs, seen = [], set()
            for pair in attrs["allowed_address_pairs"]:
                pair = {"mac_address": item["mac_address"], **pair}
                key = (pair["ip_address"], pair["mac_address"])
                if key in seen:
                    return self._neutron_error(context, 400, "DuplicateAddressPairInRequest",
                                               f"Request contains duplicate address pair: "
                                               f"mac_address {key[1]} ip_address {key[0]}.")
                seen.add(key)
                pairs.append(pair)
            attrs = {**attrs, "allowed_address_pairs": pairs}
        if collection == "floatingips" and "port_id" in attrs:
            port = self.neutron["ports"].get(attrs["port_id"] or "")
            attrs = {**attrs, "fixed_ip_address":
                     attrs.get("fixed_ip_address") or
                     (port["fixed_ips"][0]["ip_address"] if port else None)}
        item.update(attrs)
        item["revision_number"] += 1
        return {single: item}

    def _neutron_delete(self, context, collection: str, item: dict[str, Any]):
        if collection == "security-groups" and any(
                item["id"] in p["security_groups"] for p in self.neutron["ports"].values()):
            return self._neutron_error(context, 409, "SecurityGroupInUse",
                                       f"Security Group {item['id']} in use.")
        if collection == "ports":
            for fip in self.neutron["floatingips"].values():
                if fip["port_id"] == item["id"]:
                    fip.update(port_id=None, fixed_ip_address=None)
        del self.neutron[collection][item["id"]]
        context.status_code = 204
        return None

    # -- nova ------------------------------------------------------------------------------

    @staticmethod
    def _nova_error(context, status: int, message: str):
        context.status_code = status
        kind = {400: "badRequest", 403: "forbidden", 404: "itemNotFound",
                409: "conflictingRequest"}.get(status, "computeFault")
        return {kind: {"code": status, "message": message}}

    def _nova_call(self, request, context):
        path, query, body = self._record("compute", request)
        collection = path[0]
        failure = self._injected(request.method, "compute", collection)
        if failure:
            return self._nova_error(context, *failure)
        if collection == "flavors":
            if len(path) > 1 and path[1] != "detail":
                flavor = self.flavors.get(path[1])
                if flavor is None:
                    return self._nova_error(context, 404, f"Flavor {path[1]} could not be "
                                                          "found.")
                return {"flavor": flavor}
            return {"flavors": list(self.flavors.values())}
        if collection == "os-availability-zone":
            return {"availabilityZoneInfo": [{"zoneName": z, "zoneState": {"available": True},
                                              "hosts": None} for z in self.zones]}
        if collection != "servers":
            return self._nova_error(context, 404, "no such resource")
        if request.method == "GET" and (len(path) == 1 or path[1] == "detail"):
            name = (query.get("name") or [None])[0]
            return {"servers": [self._show(s) for s in list(self.servers.values())
                                if name is None or re.search(name, s["name"])]}
        if request.method == "POST" and len(path) == 1:
            return self._create_server(context, body["server"])
        server = self.servers.get(path[1])
        if server is None:
            return self._nova_error(context, 404, f"Instance {path[1]} could not be found.")
        if request.method == "GET" and len(path) == 2:
            server["_polls"] += 1
            if server["status"] == "BUILD" and server["_polls"] >= self.build_polls:
                server["status"] = self.server_outcome
                if self.server_outcome == "ERROR":
                    server["fault"] = dict(self.server_fault)
            return {"server": self._show(server)}
        if request.method == "DELETE" and len(path) == 2:
            del self.servers[server["id"]]
            for port in self.ports(device_id=server["id"]):
                port.update(device_id="", device_owner="", status="DOWN")
            context.status_code = 204
            return None
        if len(path) >= 3 and path[2] == "os-interface":
            return self._interface(request, context, server, path, body)
        return self._nova_error(context, 404, "no such resource")

    @staticmethod
    def _show(server: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in server.items() if not k.startswith("_")}

    def _create_server(self, context, attrs: dict[str, Any]):
        if attrs.get("flavorRef") not in self.flavors:
            return self._nova_error(context, 400, f"Flavor {attrs.get('flavorRef')} could not "
                                                  "be found.")
        if attrs.get("imageRef") not in self.images:
            return self._nova_error(context, 400, f"Image {attrs.get('imageRef')} could not "
                                                  "be found.")
        for tag in attrs.get("tags") or ():
            if len(tag) > 60 or "/" in tag or "," in tag:
                return self._nova_error(context, 400, f"Invalid input for field/attribute "
                                                      f"tags: {tag!r}")
        ports = []
        for net in attrs.get("networks") or ():
            port = self.neutron["ports"].get(net.get("port"))
            if port is None:
                return self._nova_error(context, 400, f"Port {net.get('port')} not found.")
            ports.append(port)
        server = {"id": _new_id(), "name": attrs["name"], "status": "BUILD",
                  "OS-EXT-STS:task_state": "scheduling",
                  "OS-EXT-AZ:availability_zone": attrs.get("availability_zone", "nova"),
                  "metadata": attrs.get("metadata") or {}, "tags": attrs.get("tags") or [],
                  "flavor": {"id": attrs["flavorRef"]}, "image": {"id": attrs["imageRef"]},
                  "OS-EXT-SRV-ATTR:user_data": attrs.get("user_data"),
                  "addresses": {}, "tenant_id": self.project_id, "_polls": 0}
        self.servers[server["id"]] = server
        for port in ports:
            port.update(device_id=server["id"], device_owner="compute:nova", status="ACTIVE")
        context.status_code = 202
        return {"server": {"id": server["id"], "links": [], "adminPass": "x",
                           "OS-DCF:diskConfig": "MANUAL", "security_groups": []}}

    def _interface(self, request, context, server, path, body):
        if request.method == "POST":
            port = self.neutron["ports"].get(body["interfaceAttachment"].get("port_id"))
            if port is None:
                return self._nova_error(context, 404, "Port could not be found.")
            port.update(device_id=server["id"], device_owner="compute:nova", status="ACTIVE")
            return {"interfaceAttachment": {"port_id": port["id"], "net_id": port["network_id"],
                                            "fixed_ips": port["fixed_ips"],
                                            "mac_addr": port["mac_address"],
                                            "port_state": "ACTIVE"}}
        if request.method == "DELETE":
            port = self.neutron["ports"].get(path[3])
            if port is None or port["device_id"] != server["id"]:
                return self._nova_error(context, 404, "Port is not attached.")
            port.update(device_id="", device_owner="", status="DOWN")
            context.status_code = 202
            return None
        return self._nova_error(context, 405, request.method)

    # -- glance ----------------------------------------------------------------------------

    def _glance_call(self, request, context):
        path, query, _ = self._record("image", request)
        if path[0] != "images":
            context.status_code = 404
            return {"message": "not found"}
        if len(path) > 1:
            image = self.images.get(path[1])
            if image is None:
                context.status_code = 404
                return {"message": f"No image found with ID {path[1]}", "code": "404 Not Found"}
            return image
        name = (query.get("name") or [None])[0]
        return {"images": [i for i in self.images.values() if name is None or i["name"] == name]}
