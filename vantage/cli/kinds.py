"""The object kinds the CLI manages, and the convenience options each kind adds on top of the
generic `--field` / `--json`.

A `KindSpec` says which columns `list` shows, which options `create` and `set` take, and how
those options become fields of the request body. References given by name become
`/api/<kind>?name=<name>` refs that the controller resolves.
"""
from __future__ import annotations

import argparse
import ipaddress
from typing import Any

from vantage.client import Client, ClientError, name_from_ref, name_ref
from vantage.model.enums import HealthMonitorType, HttpResponseCode, LbAlgorithm


def ip_addr(text: str, option: str) -> dict[str, str]:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ClientError(f"{option} {text!r}: not an IP address") from None
    return {"addr": str(ip), "type": "V4" if ip.version == 4 else "V6"}


def parse_server(text: str) -> dict[str, Any]:
    """`IP`, `IP:PORT` or `[IPv6]:PORT` → a pool server."""
    host, port = text, None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ClientError(f"--server {text!r}: expected [IPv6]:PORT")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    server: dict[str, Any] = {"ip": ip_addr(host, "--server")}
    if port is not None:
        server["port"] = _port(port, f"--server {text!r}")
    return server


def _port(text: str, what: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise ClientError(f"{what}: port must be 1..65535, not {text!r}")
    return port


def parse_service(text: str, ssl: bool) -> dict[str, Any]:
    """`80` or `8000-8010` → a virtual service's service entry."""
    option = "--ssl-port" if ssl else "--port"
    first, sep, last = text.partition("-")
    service: dict[str, Any] = {"port": _port(first, f"{option} {text!r}")}
    if sep:
        service["port_range_end"] = _port(last, f"{option} {text!r}")
    if ssl:
        service["enable_ssl"] = True
    return service


def ref_display(value: Any) -> Any:
    """Show refs by name when the controller added `#<name>` (include_name)."""
    if isinstance(value, str) and "/api/" in value:
        return name_from_ref(value) or value.rsplit("/", 1)[-1]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return [ref_display(v) for v in value]
    return value


class KindSpec:
    """Options and columns of one kind; the base adds nothing beyond `--field`/`--json`."""

    kind: str = ""
    #: the columns `list` shows (beyond these, `--long` shows every field)
    columns: tuple[str, ...] = ("uuid", "name")

    def __init__(self, kind: str | None = None, columns: tuple[str, ...] | None = None) -> None:
        if kind:
            self.kind = kind
        if columns:
            self.columns = columns

    def add_arguments(self, parser: argparse.ArgumentParser, creating: bool) -> None:
        """Options specific to this kind (`creating` is False for `set`)."""

    def body(self, args: argparse.Namespace, creating: bool) -> dict[str, Any]:
        """The fields the kind-specific options set (only those given)."""
        return {}

    def prepare(self, client: Client, args: argparse.Namespace, body: dict[str, Any],
                current: dict[str, Any] | None) -> None:
        """Side effects needed before the write (e.g. creating a VIP); may edit `body`."""

    def patches(self, args: argparse.Namespace) -> list[dict[str, Any]]:
        """Avi PATCH bodies (`{"add": ...}` / `{"delete": ...}`) that `set` sends after its PUT."""
        return []

    def display(self, column: str, obj: dict[str, Any]) -> Any:
        """How `column` of `obj` reads in a table (refs by name, servers as ip:port)."""
        if column == "url":
            return obj.get(column)
        return ref_display(obj.get(column))


def _add_enable(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--enable", dest="enabled", action="store_const", const=True,
                       help="Enable it.")
    group.add_argument("--disable", dest="enabled", action="store_const", const=False,
                       help="Disable it.")


class PoolSpec(KindSpec):
    kind = "pool"
    columns = ("uuid", "name", "lb_algorithm", "servers", "health_monitor_refs")

    def add_arguments(self, parser: argparse.ArgumentParser, creating: bool) -> None:
        parser.add_argument("--server", action="append", metavar="IP[:PORT]",
                            help="A server (repeat for more). On set, replaces the list.")
        if not creating:
            parser.add_argument("--add-server", action="append", metavar="IP[:PORT]",
                                help="Add a server, keeping the others (repeatable).")
            parser.add_argument("--remove-server", action="append", metavar="IP[:PORT]",
                                help="Remove a server (repeatable).")
        parser.add_argument("--lb-algorithm", choices=[a.value for a in LbAlgorithm],
                            metavar="ALGORITHM",
                            help="One of: " + ", ".join(a.value for a in LbAlgorithm))
        parser.add_argument("--health-monitor", action="append", metavar="NAME",
                            help="A health monitor by name or UUID (repeatable; on set, "
                                 "replaces the list).")
        parser.add_argument("--default-server-port", type=int, metavar="PORT",
                            help="Port of servers listed without one.")
        parser.add_argument("--persistence-profile", metavar="NAME",
                            help="An application persistence profile by name or UUID.")
        _add_enable(parser)

    def body(self, args: argparse.Namespace, creating: bool) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if args.server:
            body["servers"] = [parse_server(s) for s in args.server]
        if args.lb_algorithm:
            body["lb_algorithm"] = args.lb_algorithm
        if args.health_monitor:
            body["health_monitor_refs"] = [name_ref("healthmonitor", h)
                                           for h in args.health_monitor]
        if args.default_server_port is not None:
            body["default_server_port"] = args.default_server_port
        if args.persistence_profile:
            body["application_persistence_profile_ref"] = name_ref(
                "applicationpersistenceprofile", args.persistence_profile)
        if args.enabled is not None:
            body["enabled"] = args.enabled
        return body

    def patches(self, args: argparse.Namespace) -> list[dict[str, Any]]:
        out = []
        if getattr(args, "add_server", None):
            out.append({"add": {"servers": [parse_server(s) for s in args.add_server]}})
        if getattr(args, "remove_server", None):
            out.append({"delete": {"servers": [parse_server(s) for s in args.remove_server]}})
        return out

    def display(self, column: str, obj: dict[str, Any]) -> Any:
        value = obj.get(column)
        if column == "servers" and isinstance(value, list):
            return [_server_text(s, obj.get("default_server_port")) for s in value]
        return super().display(column, obj)


def _server_text(server: dict[str, Any], default_port: Any) -> str:
    addr = (server.get("ip") or {}).get("addr", "?")
    port = server.get("port") or default_port
    if ":" in addr:
        addr = f"[{addr}]"
    return f"{addr}:{port}" if port else addr


class VirtualServiceSpec(KindSpec):
    kind = "virtualservice"
    columns = ("uuid", "name", "vsvip_ref", "services", "pool_ref", "enabled")

    def add_arguments(self, parser: argparse.ArgumentParser, creating: bool) -> None:
        parser.add_argument("--vip", action="append", metavar="IP",
                            help="VIP address(es); kept in a vsvip named '<name>-vsvip' that is "
                                 "created or updated (unless --vsvip names one).")
        parser.add_argument("--vsvip", metavar="NAME", help="An existing vsvip by name or UUID.")
        parser.add_argument("--port", action="append", metavar="PORT[-END]",
                            help="A service port or range (repeatable; on set, replaces all "
                                 "services).")
        parser.add_argument("--ssl-port", action="append", metavar="PORT[-END]",
                            help="A service port with TLS enabled (repeatable).")
        parser.add_argument("--pool", metavar="NAME", help="Default pool, by name or UUID.")
        parser.add_argument("--pool-group", metavar="NAME", help="Default pool group.")
        parser.add_argument("--application-profile", metavar="NAME",
                            help="e.g. System-HTTP, System-Secure-HTTP, System-L4-Application.")
        parser.add_argument("--network-profile", metavar="NAME",
                            help="e.g. System-TCP-Proxy, System-UDP-Fast-Path.")
        parser.add_argument("--se-group", metavar="NAME", help="Service engine group.")
        parser.add_argument("--cloud", metavar="NAME", help="Cloud.")
        parser.add_argument("--ssl-profile", metavar="NAME", help="e.g. System-Standard.")
        parser.add_argument("--ssl-cert", action="append", metavar="NAME",
                            help="An sslkeyandcertificate (repeatable).")
        _add_enable(parser)

    def body(self, args: argparse.Namespace, creating: bool) -> dict[str, Any]:
        if args.vip and args.vsvip:
            raise ClientError("give either --vip (addresses) or --vsvip (an existing vsvip), "
                              "not both")
        body: dict[str, Any] = {}
        services = [parse_service(p, False) for p in args.port or ()]
        services += [parse_service(p, True) for p in args.ssl_port or ()]
        if services:
            body["services"] = services
        if args.vsvip:
            body["vsvip_ref"] = name_ref("vsvip", args.vsvip)
        if args.pool and args.pool_group:
            raise ClientError("give either --pool or --pool-group, not both")
        refs = (("pool", "pool_ref", "pool"), ("pool_group", "pool_group_ref", "poolgroup"),
                ("application_profile", "application_profile_ref", "applicationprofile"),
                ("network_profile", "network_profile_ref", "networkprofile"),
                ("se_group", "se_group_ref", "serviceenginegroup"),
                ("cloud", "cloud_ref", "cloud"), ("ssl_profile", "ssl_profile_ref", "sslprofile"))
        for option, field, kind in refs:
            value = getattr(args, option)
            if value:
                body[field] = name_ref(kind, value)
        if args.ssl_cert:
            body["ssl_key_and_certificate_refs"] = [name_ref("sslkeyandcertificate", c)
                                                    for c in args.ssl_cert]
        if args.enabled is not None:
            body["enabled"] = args.enabled
        return body

    def prepare(self, client: Client, args: argparse.Namespace, body: dict[str, Any],
                current: dict[str, Any] | None) -> None:
        if not args.vip:
            return
        name = body.get("name") or (current or {}).get("name") or args.name_or_uuid
        vips = [{"vip_id": str(i), "ip_address": ip_addr(a, "--vip")}
                for i, a in enumerate(args.vip)]
        vsvip_name = f"{name}-vsvip"
        existing = client.get_by_name("vsvip", vsvip_name)
        if existing is None:
            vsvip: dict[str, Any] = {"name": vsvip_name, "vip": vips}
            if body.get("cloud_ref"):
                vsvip["cloud_ref"] = body["cloud_ref"]
            created = client.create("vsvip", vsvip)
            body["vsvip_ref"] = name_ref("vsvip", created.get("uuid") or vsvip_name)
        else:
            if [v.get("ip_address") for v in existing.get("vip", [])] != \
                    [v["ip_address"] for v in vips]:
                client.put("vsvip", existing["uuid"], {**existing, "vip": vips})
            body["vsvip_ref"] = name_ref("vsvip", existing["uuid"])

    def display(self, column: str, obj: dict[str, Any]) -> Any:
        value = obj.get(column)
        if column == "services" and isinstance(value, list):
            return [_service_text(s) for s in value]
        return super().display(column, obj)


def _service_text(service: dict[str, Any]) -> str:
    text = str(service.get("port"))
    if service.get("port_range_end") and service["port_range_end"] != service.get("port"):
        text += f"-{service['port_range_end']}"
    return text + ("/ssl" if service.get("enable_ssl") else "")


class HealthMonitorSpec(KindSpec):
    kind = "healthmonitor"
    columns = ("uuid", "name", "type", "send_interval", "receive_timeout", "monitor_port")

    def add_arguments(self, parser: argparse.ArgumentParser, creating: bool) -> None:
        parser.add_argument("--type", choices=[t.value for t in HealthMonitorType],
                            metavar="TYPE",
                            help="One of: " + ", ".join(t.value for t in HealthMonitorType))
        parser.add_argument("--send-interval", type=int, metavar="SECONDS")
        parser.add_argument("--receive-timeout", type=int, metavar="SECONDS")
        parser.add_argument("--successful-checks", type=int, metavar="N")
        parser.add_argument("--failed-checks", type=int, metavar="N")
        parser.add_argument("--monitor-port", type=int, metavar="PORT",
                            help="Probe this port instead of each server's.")
        parser.add_argument("--http-request", metavar="LINE",
                            help="HTTP(S) monitors: request line, e.g. 'GET /health HTTP/1.1'.")
        parser.add_argument("--http-response-code", action="append",
                            choices=[c.value for c in HttpResponseCode], metavar="CODE",
                            help="HTTP(S) monitors: accepted class, e.g. HTTP_2XX (repeatable).")
        parser.add_argument("--http-response", metavar="TEXT",
                            help="HTTP(S) monitors: text the body must contain.")

    def body(self, args: argparse.Namespace, creating: bool) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if args.type:
            body["type"] = args.type
        for field in ("send_interval", "receive_timeout", "successful_checks", "failed_checks",
                      "monitor_port"):
            if getattr(args, field) is not None:
                body[field] = getattr(args, field)
        http: dict[str, Any] = {}
        if args.http_request:
            http["http_request"] = args.http_request
        if args.http_response_code:
            http["http_response_code"] = args.http_response_code
        if args.http_response:
            http["http_response"] = args.http_response
        if http:
            sub = "https_monitor" if args.type == "HEALTH_MONITOR_HTTPS" else "http_monitor"
            body[sub] = http
        return body


class VsVipSpec(KindSpec):
    kind = "vsvip"
    columns = ("uuid", "name", "vip")

    def add_arguments(self, parser: argparse.ArgumentParser, creating: bool) -> None:
        parser.add_argument("--vip", action="append", metavar="IP",
                            help="A VIP address (repeatable; on set, replaces the list).")
        parser.add_argument("--cloud", metavar="NAME", help="Cloud, by name or UUID.")

    def body(self, args: argparse.Namespace, creating: bool) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if args.vip:
            body["vip"] = [{"vip_id": str(i), "ip_address": ip_addr(a, "--vip")}
                           for i, a in enumerate(args.vip)]
        if args.cloud:
            body["cloud_ref"] = name_ref("cloud", args.cloud)
        return body

    def display(self, column: str, obj: dict[str, Any]) -> Any:
        value = obj.get(column)
        if column == "vip" and isinstance(value, list):
            return [(v.get("ip_address") or {}).get("addr", "auto") for v in value]
        return super().display(column, obj)


class PoolGroupSpec(KindSpec):
    kind = "poolgroup"
    columns = ("uuid", "name", "members")

    def add_arguments(self, parser: argparse.ArgumentParser, creating: bool) -> None:
        parser.add_argument("--member", action="append", metavar="POOL[:RATIO]",
                            help="A member pool by name or UUID, with an optional ratio "
                                 "(repeatable; on set, replaces the list).")

    def body(self, args: argparse.Namespace, creating: bool) -> dict[str, Any]:
        if not args.member:
            return {}
        members = []
        for item in args.member:
            pool, _, ratio = item.partition(":")
            member: dict[str, Any] = {"pool_ref": name_ref("pool", pool)}
            if ratio:
                if not ratio.isdigit():
                    raise ClientError(f"--member {item!r}: ratio must be a whole number")
                member["ratio"] = int(ratio)
            members.append(member)
        return {"members": members}

    def display(self, column: str, obj: dict[str, Any]) -> Any:
        value = obj.get(column)
        if column == "members" and isinstance(value, list):
            return [ref_display(m.get("pool_ref")) for m in value]
        return super().display(column, obj)


class RoleSpec(KindSpec):
    kind = "role"
    columns = ("uuid", "name")

    def add_arguments(self, parser: argparse.ArgumentParser, creating: bool) -> None:
        parser.add_argument("--privilege", action="append", metavar="RESOURCE=ACCESS",
                            help="e.g. PERMISSION_POOL=WRITE_ACCESS (repeatable; on set, "
                                 "replaces the list).")

    def body(self, args: argparse.Namespace, creating: bool) -> dict[str, Any]:
        if not args.privilege:
            return {}
        privileges = []
        for item in args.privilege:
            resource, sep, access = item.partition("=")
            if not sep or not resource or not access:
                raise ClientError(f"--privilege {item!r}: expected RESOURCE=ACCESS, e.g. "
                                  "PERMISSION_POOL=READ_ACCESS")
            privileges.append({"resource": resource, "type": access})
        return {"privileges": privileges}


class UserSpec(KindSpec):
    kind = "user"
    columns = ("uuid", "name", "username", "access")

    def add_arguments(self, parser: argparse.ArgumentParser, creating: bool) -> None:
        # --password and --tenant are global options (how the CLI itself logs in), so the
        # user's own are named differently.
        parser.add_argument("--user-password", metavar="PASSWORD",
                            help="The new user's password.")
        parser.add_argument("--access", action="append", metavar="ROLE[@TENANT]",
                            help="A role in a tenant, or in all tenants with ROLE@* "
                                 "(repeatable; on set, replaces the list).")
        parser.add_argument("--default-tenant", metavar="TENANT")
        parser.add_argument("--email", metavar="ADDRESS")
        parser.add_argument("--full-name", metavar="NAME")

    def body(self, args: argparse.Namespace, creating: bool) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if creating:
            body["username"] = args.name
        if args.user_password:
            body["password"] = args.user_password
        if args.access:
            access = []
            for item in args.access:
                role, _, tenant = item.partition("@")
                entry: dict[str, Any] = {"role_ref": name_ref("role", role)}
                if tenant == "*":
                    entry["all_tenants"] = True
                elif tenant:
                    entry["tenant_ref"] = name_ref("tenant", tenant)
                access.append(entry)
            body["access"] = access
        if args.default_tenant:
            body["default_tenant_ref"] = name_ref("tenant", args.default_tenant)
        if args.email:
            body["email"] = args.email
        if args.full_name:
            body["full_name"] = args.full_name
        return body

    def display(self, column: str, obj: dict[str, Any]) -> Any:
        value = obj.get(column)
        if column == "access" and isinstance(value, list):
            return [f"{ref_display(a.get('role_ref'))}@"
                    f"{'*' if a.get('all_tenants') else ref_display(a.get('tenant_ref'))}"
                    for a in value]
        return super().display(column, obj)


class CloudSpec(KindSpec):
    kind = "cloud"
    columns = ("uuid", "name", "vtype")

    def add_arguments(self, parser: argparse.ArgumentParser, creating: bool) -> None:
        parser.add_argument("--vtype", metavar="VTYPE",
                            help="CLOUD_NONE, CLOUD_OPENSTACK, CLOUD_VCENTER or CLOUD_LINUXSERVER.")

    def body(self, args: argparse.Namespace, creating: bool) -> dict[str, Any]:
        return {"vtype": args.vtype} if args.vtype else {}


class ServiceEngineGroupSpec(KindSpec):
    kind = "serviceenginegroup"
    columns = ("uuid", "name", "ha_mode", "max_se", "cloud_ref")

    def add_arguments(self, parser: argparse.ArgumentParser, creating: bool) -> None:
        parser.add_argument("--ha-mode", metavar="MODE",
                            help="HA_MODE_SHARED, HA_MODE_SHARED_PAIR or "
                                 "HA_MODE_LEGACY_ACTIVE_STANDBY.")
        parser.add_argument("--max-se", type=int, metavar="N")
        parser.add_argument("--cloud", metavar="NAME", help="Cloud, by name or UUID.")

    def body(self, args: argparse.Namespace, creating: bool) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if args.ha_mode:
            body["ha_mode"] = args.ha_mode
        if args.max_se is not None:
            body["max_se"] = args.max_se
        if args.cloud:
            body["cloud_ref"] = name_ref("cloud", args.cloud)
        return body


_SPECS: list[KindSpec] = [
    PoolSpec(), VirtualServiceSpec(), HealthMonitorSpec(), VsVipSpec(), PoolGroupSpec(),
    RoleSpec(), UserSpec(), CloudSpec(), ServiceEngineGroupSpec(),
    KindSpec("applicationprofile", ("uuid", "name", "type")),
    KindSpec("sslprofile", ("uuid", "name", "type")),
    KindSpec("sslkeyandcertificate", ("uuid", "name", "type")),
    KindSpec("applicationpersistenceprofile", ("uuid", "name", "persistence_type")),
    KindSpec("networkprofile"),
    KindSpec("network"), KindSpec("serviceengine"), KindSpec("httppolicyset"),
    KindSpec("tenant"),
]

#: kind name → its spec, for every kind the controller serves
KINDS: dict[str, KindSpec] = {spec.kind: spec for spec in _SPECS}
