"""The object kinds, by the name they have in URLs, and what the controller needs to know
about each: where its references are, which fields are secrets, which privilege guards it."""
from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from vantage.model.applicationpersistenceprofile import ApplicationPersistenceProfile
from vantage.model.base import VantageObject
from vantage.model.cloud import Cloud
from vantage.model.httppolicyset import HttpPolicySet
from vantage.model.network import Network
from vantage.model.pool import HealthMonitor, Pool
from vantage.model.poolgroup import PoolGroup
from vantage.model.profiles import ApplicationProfile, NetworkProfile
from vantage.model.role import Role
from vantage.model.serviceengine import ServiceEngine
from vantage.model.serviceenginegroup import ServiceEngineGroup
from vantage.model.sslkeyandcertificate import SslKeyAndCertificate
from vantage.model.sslprofile import SslProfile
from vantage.model.tenant import Tenant
from vantage.model.user import User
from vantage.model.virtualservice import VirtualService, VsVip

KINDS: dict[str, type[VantageObject]] = {
    cls.kind: cls
    for cls in (HealthMonitor, Pool, ApplicationProfile, NetworkProfile, VsVip, VirtualService,
                Cloud, Network, ServiceEngineGroup, ServiceEngine, PoolGroup,
                ApplicationPersistenceProfile, SslProfile, SslKeyAndCertificate, HttpPolicySet,
                Tenant, Role, User)
}

# References inside nested objects of kinds whose modules keep only top-level `ref_fields`.
# A path segment ending in `[]` walks every item of a list.
_NESTED_REFS: dict[str, dict[str, str]] = {
    "virtualservice": {
        "services[].override_application_profile_ref": "applicationprofile",
        "services[].override_network_profile_ref": "networkprofile",
        "http_policies[].http_policy_set_ref": "httppolicyset",
    },
    "vsvip": {"vip[].network_ref": "network"},
}


def _ref_paths(cls: type[VantageObject]) -> tuple[tuple[str, str], ...]:
    paths = dict(cls.ref_fields)
    paths.update(getattr(cls, "nested_ref_fields", {}))
    paths.update(_NESTED_REFS.get(cls.kind, {}))
    return tuple(paths.items())


#: kind -> ((field path, referenced kind), ...)
REF_PATHS: dict[str, tuple[tuple[str, str], ...]] = {k: _ref_paths(c) for k, c in KINDS.items()}

#: kind -> (top-level ref fields, nested ref paths), each as ((path, referenced kind), ...)
REF_FIELDS_SPLIT: dict[str, tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]] = {
    k: (tuple(p for p in paths if "." not in p[0] and not p[0].endswith("[]")),
        tuple(p for p in paths if "." in p[0] or p[0].endswith("[]")))
    for k, paths in REF_PATHS.items()}

#: kind -> dotted paths of write-only fields (stored encrypted, answered as "<sensitive>")
SECRET_FIELDS: dict[str, tuple[str, ...]] = {
    k: tuple(getattr(c, "secret_fields", ())) for k, c in KINDS.items()}

#: the privilege (role `privileges[].resource`) that guards each kind
PERMISSIONS: dict[str, str] = {kind: f"PERMISSION_{kind.upper()}" for kind in KINDS}

#: kinds that exist once for the whole controller; their objects live in the admin tenant
GLOBAL_KINDS = frozenset({"tenant", "role", "user"})

#: kinds whose admin-tenant objects every tenant can read and refer to (the provider's
#: infrastructure); other admin-tenant objects are shared only when built in (`System-*`)
PROVIDER_KINDS = frozenset({"cloud", "network", "serviceenginegroup", "serviceengine"})


@functools.cache
def _segments(path: str) -> tuple[tuple[str, bool], ...]:
    return tuple((seg[:-2], True) if seg.endswith("[]") else (seg, False)
                 for seg in path.split("."))


def iter_refs(doc: dict[str, Any], path: str) -> Iterator[tuple[str, Any, Any]]:
    """Yield (concrete path, container, key) for every value present at `path` in `doc`.

    `container[key]` is a reference string, or a list of them for `*_refs` fields. Concrete paths
    name list items by index (`services[0].override_application_profile_ref`), so errors can
    name them.
    """
    segments = _segments(path)
    if len(segments) == 1:  # the common case: a top-level field
        key = segments[0][0]
        if doc.get(key) is not None:
            yield key, doc, key
        return
    last = len(segments) - 1

    def walk(node: Any, i: int, prefix: str) -> Iterator[tuple[str, Any, Any]]:
        if not isinstance(node, dict):
            return
        key, many = segments[i]
        value = node.get(key)
        if value is None:
            return
        here = f"{prefix}.{key}" if prefix else key
        if i == last:
            yield here, node, key
        elif many:
            if isinstance(value, list):
                for n, item in enumerate(value):
                    yield from walk(item, i + 1, f"{here}[{n}]")
        else:
            yield from walk(value, i + 1, here)

    yield from walk(doc, 0, "")


def get_path(doc: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted path of nested objects (no lists), or None."""
    node: Any = doc
    for seg in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(seg)
    return node


def set_path(doc: dict[str, Any], dotted: str, value: Any) -> bool:
    """Set the value at a dotted path if its parent object exists; True when set."""
    *parents, last = dotted.split(".")
    node: Any = doc
    for seg in parents:
        node = node.get(seg) if isinstance(node, dict) else None
        if node is None:
            return False
    if not isinstance(node, dict):
        return False
    node[last] = value
    return True


def pop_path(doc: dict[str, Any], dotted: str) -> Any:
    """Remove and return the value at a dotted path (None when absent)."""
    *parents, last = dotted.split(".")
    node: Any = doc
    for seg in parents:
        node = node.get(seg) if isinstance(node, dict) else None
    return node.pop(last, None) if isinstance(node, dict) else None
