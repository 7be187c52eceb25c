"""SE configuration documents: parse, validate completely, resolve references.

A document maps object kinds to lists of objects with Avi field names (docs/se-config.md):
the same model the controller stores. The standalone file and the controller's push both go
through `compile_document`; nothing is applied unless the whole document is valid.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
from pathlib import Path
from typing import Any

import pydantic
import yaml

from vantage.model import refs
from vantage.model.applicationpersistenceprofile import ApplicationPersistenceProfile
from vantage.model.base import VantageObject, describe_errors
from vantage.model.defaults import SYSTEM_OBJECTS
from vantage.model.httppolicyset import HttpPolicySet
from vantage.model.pool import HealthMonitor, Pool
from vantage.model.profiles import ApplicationProfile, NetworkProfile
from vantage.model.sslkeyandcertificate import SslKeyAndCertificate
from vantage.model.sslprofile import SslProfile
from vantage.model.virtualservice import VirtualService, VsVip
from vantage.proxy import tls

#: kinds an SE configuration may contain, in dependency order
SE_KINDS: dict[str, type[VantageObject]] = {
    "sslkeyandcertificate": SslKeyAndCertificate,
    "sslprofile": SslProfile,
    "healthmonitor": HealthMonitor,
    "applicationpersistenceprofile": ApplicationPersistenceProfile,
    "pool": Pool,
    "httppolicyset": HttpPolicySet,
    "applicationprofile": ApplicationProfile,
    "networkprofile": NetworkProfile,
    "vsvip": VsVip,
    "virtualservice": VirtualService,
}


class ConfigError(ValueError):
    """The configuration is invalid; `problems` lists every reason, one line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclasses.dataclass(frozen=True)
class CompiledPool:
    model: Pool
    monitors: tuple[HealthMonitor, ...]
    #: re-encryption: the profile for connections to servers, if any
    ssl_profile: SslProfile | None = None
    persistence: ApplicationPersistenceProfile | None = None


@dataclasses.dataclass(frozen=True)
class CompiledService:
    """One virtual service, with every reference replaced by the object it names."""

    model: VirtualService
    listen: tuple[tuple[str, int], ...]
    pool: str | None
    application_profile: ApplicationProfile
    network_profile: NetworkProfile
    tls_ports: frozenset[int] = frozenset()
    certificates: Any = None  # tls.CertificateSet, built (and so checked) at compile time
    tls_profile: Any = None  # tls.TlsProfile
    policies: Any = None  # vantage.proxy.policy.HttpPolicies, compiled (and so checked) here

    @property
    def mode(self) -> str:
        return "l4" if self.application_profile.type == "APPLICATION_PROFILE_TYPE_L4" else "http"


@dataclasses.dataclass(frozen=True)
class CompiledConfig:
    version: str | None
    #: keyed by UUID when the object has one, else by name
    pools: dict[str, CompiledPool]
    services: dict[str, CompiledService]


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON document; ConfigError if it cannot be read or parsed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        if path.suffix == ".json":
            document = json.loads(text)
        else:
            document = yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError([f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                           f"{exc}"]) from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError([f"{path}: the document must be a mapping of object kinds to lists"])
    return document


class _Catalogue:
    """Objects of one document (and the System-* defaults), found by name or UUID."""

    def __init__(self) -> None:
        self.by_name: dict[tuple[str, str], VantageObject] = {}
        self.by_uuid: dict[tuple[str, str], VantageObject] = {}

    def add(self, obj: VantageObject) -> str | None:
        key = (obj.kind, obj.name)
        if obj.uuid:
            # objects with UUIDs (pushed by a controller, which refers by UUID) may share a
            # name: tenants name their objects independently
            if (obj.kind, obj.uuid) in self.by_uuid:
                return f"two {obj.kind} objects have the UUID {obj.uuid}"
            self.by_uuid[(obj.kind, obj.uuid)] = obj
            self.by_name.setdefault(key, obj)
            return None
        if key in self.by_name and not self.by_name[key].name.startswith("System-"):
            return f"two {obj.kind} objects are named {obj.name!r}"
        self.by_name[key] = obj
        return None

    def resolve(self, value: str, kind: str) -> VantageObject:
        ref = refs.parse_ref(value, kind, allow_bare_name=True)
        found = (self.by_uuid.get((kind, ref.uuid)) if ref.uuid
                 else self.by_name.get((kind, ref.name)))
        if found is None:
            raise refs.RefError(f"no {kind} {ref.uuid or ref.name!r} in this configuration")
        return found


def compile_document(document: dict[str, Any]) -> CompiledConfig:
    """Validate a whole document and resolve its references. Raises ConfigError listing every
    problem found (field paths included), so one edit can fix them all."""
    problems: list[str] = []
    catalogue = _Catalogue()
    for kind, objects in SYSTEM_OBJECTS.items():
        if kind in SE_KINDS:
            for data in objects:
                catalogue.add(SE_KINDS[kind].model_validate(data))
    version = document.get("version")
    unknown = set(document) - set(SE_KINDS) - {"version"}
    for kind in sorted(unknown):
        problems.append(f"{kind}: unknown object kind (expected one of {', '.join(SE_KINDS)})")

    parsed: dict[str, list[VantageObject]] = {kind: [] for kind in SE_KINDS}
    #: (kind, name or UUID) of objects rejected below: their own errors are listed, so a
    #: reference to one is not reported again as a missing object
    rejected: set[tuple[str, str]] = set()
    for kind, cls in SE_KINDS.items():
        items = document.get(kind) or []
        if not isinstance(items, list):
            problems.append(f"{kind}: must be a list of objects")
            continue
        for index, data in enumerate(items):
            label = f"{kind}[{index}]"
            if isinstance(data, dict) and data.get("name"):
                label += f" ({data['name']})"
            if not isinstance(data, dict):
                problems.append(f"{label}: must be an object")
                continue
            try:
                obj = cls.model_validate(data)
            except pydantic.ValidationError as exc:
                problems.extend(describe_errors(exc, prefix=label))
                rejected.update((kind, data[key]) for key in ("name", "uuid")
                                if isinstance(data.get(key), str))
                continue
            duplicate = catalogue.add(obj)
            if duplicate:
                problems.append(f"{label}: {duplicate}")
                continue
            parsed[kind].append(obj)

    def resolve(label: str, field: str, value: str | None, kind: str) -> Any:
        if value is None:
            return None
        try:
            return catalogue.resolve(value, kind)
        except refs.RefError as exc:
            try:
                ref = refs.parse_ref(value, kind, allow_bare_name=True)
            except refs.RefError:
                ref = None
            if ref is None or (kind, ref.uuid or ref.name) not in rejected:
                problems.append(f"{label}.{field}: {exc}")
            return None

    pools: dict[str, CompiledPool] = {}
    for index, pool in enumerate(parsed["pool"]):
        label = f"pool[{index}] ({pool.name})"
        monitors = []
        for i, ref in enumerate(pool.health_monitor_refs):
            monitor = resolve(label, f"health_monitor_refs[{i}]", ref, "healthmonitor")
            if monitor is not None:
                monitors.append(monitor)
        for i, server in enumerate(pool.servers):
            if ipaddress.ip_address(server.ip.addr).is_unspecified:
                problems.append(f"{label}.servers[{i}].ip.addr: {server.ip.addr} is not a host")
        pool_ssl = resolve(label, "ssl_profile_ref", pool.ssl_profile_ref, "sslprofile")
        if pool.ssl_server_ca:
            try:
                tls.client_context(verify_ca=pool.ssl_server_ca)
            except tls.TlsConfigError as exc:
                problems.append(f"{label}.ssl_server_ca: {exc}")
        persistence = resolve(label, "application_persistence_profile_ref",
                              pool.application_persistence_profile_ref,
                              "applicationpersistenceprofile")
        if persistence is not None:
            from vantage.proxy.persistence import make_persistence
            try:
                make_persistence(persistence, cookie_keys=[bytes(32)])
            except ValueError as exc:
                problems.append(f"{label}.application_persistence_profile_ref: {exc}")
        pools[pool.uuid or pool.name] = CompiledPool(pool, tuple(monitors), pool_ssl, persistence)

    services: dict[str, CompiledService] = {}
    bound: dict[tuple[str, int], str] = {}
    for index, vs in enumerate(parsed["virtualservice"]):
        label = f"virtualservice[{index}] ({vs.name})"
        vsvip = resolve(label, "vsvip_ref", vs.vsvip_ref, "vsvip")
        pool = resolve(label, "pool_ref", vs.pool_ref, "pool")
        app = resolve(label, "application_profile_ref",
                      vs.application_profile_ref or "System-HTTP", "applicationprofile")
        net = resolve(label, "network_profile_ref",
                      vs.network_profile_ref or "System-TCP-Proxy", "networkprofile")
        if vs.pool_group_ref:
            problems.append(f"{label}.pool_group_ref: pool groups are not supported by this SE yet;"
                            " use pool_ref")
        if vs.vsvip_ref is None:
            problems.append(f"{label}.vsvip_ref: a virtual service needs a VIP")
        if vs.pool_ref is None and vs.enabled:
            problems.append(f"{label}.pool_ref: a virtual service needs a pool")
        if net is not None and net.profile.type != "PROTOCOL_TYPE_TCP_PROXY":
            problems.append(f"{label}.network_profile_ref: {net.name} is {net.profile.type}; "
                            "only PROTOCOL_TYPE_TCP_PROXY is supported")
        if app is not None and app.type == "APPLICATION_PROFILE_TYPE_SSL":
            problems.append(f"{label}.application_profile_ref: {app.name} is "
                            "APPLICATION_PROFILE_TYPE_SSL, which this SE does not support yet")
        tls_ports: set[int] = set()
        for service in vs.services:
            if service.enable_ssl:
                tls_ports.update(range(service.port, (service.port_range_end or service.port) + 1))
        certificates = tls_profile = None
        if tls_ports:
            if app is not None and app.type != "APPLICATION_PROFILE_TYPE_HTTP":
                problems.append(f"{label}.services: enable_ssl needs an HTTP application "
                                f"profile ({app.name} is {app.type})")
            ssl_profile = resolve(label, "ssl_profile_ref", vs.ssl_profile_ref or "System-Standard",
                                  "sslprofile")
            certs = []
            for i, ref in enumerate(vs.ssl_key_and_certificate_refs):
                cert = resolve(label, f"ssl_key_and_certificate_refs[{i}]", ref,
                               "sslkeyandcertificate")
                if cert is not None:
                    certs.append((i, cert))
            if ssl_profile is not None and (certs or not vs.ssl_key_and_certificate_refs):
                # (certificates that failed validation were reported where they are defined)
                tls_profile = tls_profile_of(ssl_profile)
                try:
                    certificates = tls.CertificateSet(
                        [_certificate_spec(cert) for _, cert in certs], tls_profile)
                except tls.TlsConfigError as exc:
                    problems.append(f"{label}.ssl_key_and_certificate_refs: {exc}")
        policies = None
        if vs.http_policies:
            from vantage.proxy.policy import PolicyError, compile_policies
            sets = []
            for i, item in enumerate(sorted(vs.http_policies, key=lambda p: p.index)):
                found = resolve(label, f"http_policies[{i}].http_policy_set_ref",
                                item.http_policy_set_ref, "httppolicyset")
                if found is not None:
                    sets.append(found)
            services_seen = {(port, port in tls_ports)
                             for s in vs.services
                             for port in range(s.port, (s.port_range_end or s.port) + 1)}
            try:
                compiled = compile_policies(
                    sets, {p.name for p in parsed["pool"]},
                    pool_uuids={p.uuid: p.name for p in parsed["pool"] if p.uuid},
                    services=services_seen)
                policies = compiled if (compiled.has_request_rules
                                        or compiled.has_response_rules) else None
            except PolicyError as exc:
                problems.extend(f"{label}.http_policies: {p}" for p in exc.problems)
        if vsvip is None or (pool is None and vs.pool_ref) or app is None or net is None:
            continue
        addresses = [v.ip_address.addr for v in vsvip.vip if v.enabled and v.ip_address]
        if not addresses:
            problems.append(f"{label}.vsvip_ref: vsvip {vsvip.name!r} has no IP address")
            continue
        listen = []
        for service in vs.services:
            last = service.port_range_end or service.port
            if last - service.port > 1024:
                problems.append(f"{label}.services: port range {service.port}-{last} is too wide")
                continue
            for port in range(service.port, last + 1):
                for addr in addresses:
                    listen.append((addr, port))
        if vs.enabled:
            for address in listen:
                other = bound.get(address)
                if other is not None:
                    problems.append(f"{label}.services: {address[0]}:{address[1]} is already "
                                    f"used by virtualservice {other!r}")
                bound[address] = vs.name
        services[vs.uuid or vs.name] = CompiledService(
            vs, tuple(listen), (pool.uuid or pool.name) if pool else None, app, net,
            frozenset(tls_ports), certificates, tls_profile, policies)
    if problems:
        raise ConfigError(problems)
    return CompiledConfig(str(version) if version is not None else None, pools, services)


def tls_profile_of(profile: SslProfile) -> tls.TlsProfile:
    ciphers = profile.accepted_ciphers
    return tls.TlsProfile(
        versions=tuple(v.type for v in profile.accepted_versions), ciphers=ciphers,
        session_reuse=profile.enable_ssl_session_reuse,
        session_timeout=profile.ssl_session_timeout)


def _certificate_spec(cert: SslKeyAndCertificate) -> tls.CertificateSpec:
    if not cert.key or cert.key == "<sensitive>":
        raise tls.TlsConfigError(f"{cert.name}: the private key is missing")
    return tls.CertificateSpec(cert.name, cert.certificate.certificate, cert.key,
                               cert.key_passphrase)
