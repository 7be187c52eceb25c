"""The object service: create, read, list, replace, patch and delete configuration objects.

It validates bodies against the model, resolves references (URL, UUID or `/api/<kind>?name=`)
to UUIDs, keeps referential integrity, enforces tenants and roles, keeps secrets encrypted and
write-only, and records every change in the audit log. The API layer only parses and serializes.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
import time
import uuid as uuidlib
from typing import Any

import pydantic

from vantage.controller import patch as patching
from vantage.controller.caller import Caller
from vantage.controller.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PreconditionFailed,
)
from vantage.controller.secretbox import SecretBox
from vantage.db.store import (
    DuplicateObject,
    ReferenceViolation,
    Scope,
    StaleObject,
    Store,
    StoredObject,
    Transaction,
)
from vantage.model.base import describe_errors
from vantage.model.defaults import ADMIN_TENANT
from vantage.model.refs import RefError, is_uuid, parse_ref
from vantage.model.registry import (
    GLOBAL_KINDS,
    KINDS,
    PERMISSIONS,
    PROVIDER_KINDS,
    REF_FIELDS_SPLIT,
    REF_PATHS,
    SECRET_FIELDS,
    get_path,
    iter_refs,
    pop_path,
    set_path,
)

SENSITIVE = "<sensitive>"
#: kinds whose secrets are left out of answers altogether (a password hash says nothing useful)
HIDDEN_SECRET_KINDS = frozenset({"user"})
_UUID_NAMESPACE = uuidlib.UUID("6f1c0e52-3a57-4c55-9d1e-7a1f5b0c2d11")


def new_uuid(kind: str) -> str:
    return f"{kind}-{uuidlib.uuid4()}"


def builtin_uuid(kind: str, name: str) -> str:
    """The fixed UUID of a built-in object, the same on every controller."""
    return f"{kind}-{uuidlib.uuid5(_UUID_NAMESPACE, f'{kind}/{name}')}"


ADMIN_TENANT_UUID = builtin_uuid("tenant", ADMIN_TENANT)


@dataclasses.dataclass(frozen=True)
class WireOptions:
    """How objects are written out: refs become `<base_url>/api/<kind>/<uuid>`."""

    base_url: str
    include_name: bool = False
    fields: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class ListQuery:
    name: str | None = None
    name_contains: str | None = None
    page: int = 1
    page_size: int = 25
    sort: str = "name"
    descending: bool = False
    refers_to: str | None = None
    """`<kind>:<uuid>` or a UUID: objects holding a reference to it."""
    referred_by: str | None = None
    """`<kind>:<uuid>` or a UUID: objects it holds references to."""


@dataclasses.dataclass
class ListPage:
    count: int
    results: list[dict[str, Any]]
    has_more: bool


def _changes_access(method):
    """Bump `auth_generation` after a committed write to a tenant, role or user (after the
    commit, so that a cache filled meanwhile is not stamped with the new generation)."""
    @functools.wraps(method)
    def wrapper(self, caller, kind, *args, **kwargs):
        result = method(self, caller, kind, *args, **kwargs)
        if kind in GLOBAL_KINDS:
            self.auth_generation += 1
        return result
    return wrapper


class ObjectService:
    def __init__(self, store: Store, secrets: SecretBox, *, scrypt_n: int = 2 ** 14) -> None:
        self.store = store
        self.secrets = secrets
        self.admin_tenant = ADMIN_TENANT_UUID
        self.scrypt_n = scrypt_n
        #: bumped on every write to a tenant, role or user, so caches of privileges can expire
        self.auth_generation = 0

    # -- public operations --------------------------------------------------------------------

    @_changes_access
    def create(self, caller: Caller, kind: str, data: Any, wire: WireOptions,
               slug: str | None = None) -> dict[str, Any]:
        self._check_kind_and_permission(caller, kind, write=True)
        with self.store.begin(write=True) as tx:
            obj = self.create_in(tx, caller, kind, data, slug=slug)
            return self._to_wire(tx, [obj], wire)[0]

    def get(self, caller: Caller, kind: str, uuid: str, wire: WireOptions) -> dict[str, Any]:
        self._check_kind_and_permission(caller, kind, write=False)
        with self.store.begin() as tx:
            obj = self._load_visible(tx, caller, kind, uuid)
            return self._to_wire(tx, [obj], wire)[0]

    def list(self, caller: Caller, kind: str, query: ListQuery, wire: WireOptions) -> ListPage:
        self._check_kind_and_permission(caller, kind, write=False)
        with self.store.begin() as tx:
            refers_to = self._filter_uuid("refers_to", query.refers_to)
            referred_by = self._filter_uuid("referred_by", query.referred_by)
            offset = (query.page - 1) * query.page_size
            count, objs = tx.list(
                kind, self._scope(caller, kind), admin_tenant=self.admin_tenant,
                name=query.name, name_contains=query.name_contains, refers_to=refers_to,
                referred_by=referred_by, sort=query.sort, descending=query.descending,
                offset=offset, limit=query.page_size)
            return ListPage(count=count, results=self._to_wire(tx, objs, wire),
                            has_more=offset + len(objs) < count)

    @_changes_access
    def replace(self, caller: Caller, kind: str, uuid: str, data: Any, wire: WireOptions,
                if_match: str | None = None) -> dict[str, Any]:
        self._check_kind_and_permission(caller, kind, write=True)
        with self.store.begin(write=True) as tx:
            current = self._load_writable(tx, caller, kind, uuid)
            obj = self._write(tx, caller, kind, data, current, if_match=if_match)
            return self._to_wire(tx, [obj], wire)[0]

    @_changes_access
    def patch(self, caller: Caller, kind: str, uuid: str, body: Any, wire: WireOptions,
              if_match: str | None = None) -> dict[str, Any]:
        self._check_kind_and_permission(caller, kind, write=True)
        op, value = patching.operation_of(body)
        with self.store.begin(write=True) as tx:
            current = self._load_writable(tx, caller, kind, uuid)
            if op != "json_patch":
                # Refs in the patch compare with the stored UUIDs (delete) and resolve once.
                value, _ = self._resolve_refs(tx, kind, copy.deepcopy(value), current.tenant,
                                              partial=True, prefix=op)
            doc = patching.apply(self._input_form(current), op, value)
            obj = self._write(tx, caller, kind, doc, current, if_match=if_match,
                              version=current.last_modified)
            return self._to_wire(tx, [obj], wire)[0]

    @_changes_access
    def delete(self, caller: Caller, kind: str, uuid: str, if_match: str | None = None) -> None:
        self._check_kind_and_permission(caller, kind, write=True)
        with self.store.begin(write=True) as tx:
            obj = self._load_writable(tx, caller, kind, uuid)
            self._check_version(obj, if_match)
            if obj.builtin:
                raise Forbidden(f"{kind} '{obj.name}' is built in and cannot be deleted")
            self._check_unreferenced(tx, caller, obj)
            if kind == "tenant":
                self._check_tenant_empty(tx, obj)
            if kind == "user":
                if obj.uuid == caller.user_uuid:
                    raise Conflict(f"user '{obj.name}' is the user making this request; "
                                   "log in as another administrator to delete it")
                if obj.body.get("is_superuser") and not caller.superuser:
                    raise Forbidden("only a superuser may delete a superuser")
                if _active_superuser(obj.body):
                    self._check_other_superuser(tx, obj)
                tx.delete_sessions(user_uuid=obj.uuid)
                tx.delete_tokens(obj.uuid)
            try:
                tx.delete(obj.uuid)
            except ReferenceViolation:
                self._check_unreferenced(tx, caller, obj)
                raise Conflict(f"{kind} '{obj.name}' gained a reference while being deleted; "
                               "retry") from None
            except StaleObject:
                raise NotFound(f"{kind} {uuid} not found") from None
            self._audit(tx, caller, "DELETE", obj)

    def audit_entries(self, caller: Caller, *, kind: str | None = None,
                      obj_uuid: str | None = None, username: str | None = None,
                      action: str | None = None, offset: int = 0, limit: int = 25,
                      base_url: str = "") -> tuple[int, list[dict[str, Any]]]:
        """Audit entries of the caller's tenant, newest first; a superuser in the admin tenant
        sees every tenant's, and logins."""
        everything = caller.superuser and caller.tenant == self.admin_tenant
        with self.store.begin() as tx:
            count, rows = tx.list_audit(tenant=None if everything else caller.tenant,
                                        kind=kind, obj_uuid=obj_uuid, username=username,
                                        action=action, offset=offset, limit=limit)
        base = base_url.rstrip("/") + "/api/"
        out = []
        for row in rows:
            ts = row["ts"]
            out.append({
                "id": row["id"],
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))
                + f".{int(ts * 1e6) % 1_000_000:06d}Z",
                "user": row["username"], "action": row["action"], "obj_type": row["kind"],
                "obj_uuid": row["obj_uuid"], "obj_name": row["obj_name"],
                "client": row["client"],
                "tenant_ref": f"{base}tenant/{row['tenant']}" if row["tenant"] else None,
                "detail": row["detail"]})
        return count, out

    # -- used by bootstrap and other controller services --------------------------------------

    def create_in(self, tx: Transaction, caller: Caller, kind: str, data: Any,
                  slug: str | None = None, builtin: bool = False) -> StoredObject:
        """Create an object inside an open write transaction."""
        if slug is not None and not is_uuid(slug, kind):
            raise InvalidInput(f"Slug: {slug!r} is not a {kind} UUID (such as {new_uuid(kind)})")
        if isinstance(data, dict) and data.get("uuid") is not None:
            if slug is not None and data["uuid"] != slug:
                raise InvalidInput("uuid: differs from the Slug header")
            if not isinstance(data["uuid"], str) or not is_uuid(data["uuid"], kind):
                raise InvalidInput(f"uuid: {data['uuid']!r} is not a {kind} UUID "
                                   f"(such as {new_uuid(kind)})")
            slug = data["uuid"]
        return self._write(tx, caller, kind, data, None, slug=slug, builtin=builtin)

    def find_visible(self, tx: Transaction, kind: str, name: str, tenant: str) -> StoredObject | None:
        found = tx.find(kind, name, [tenant, self.admin_tenant])
        for obj in found:
            if obj.tenant == tenant:
                return obj
        for obj in found:
            if obj.shared:
                return obj
        return None

    def decrypted_secrets(self, obj: StoredObject) -> dict[str, str]:
        """Plaintext secrets of `obj` by field path (for configuration sent to SEs)."""
        stored = json.loads(obj.secrets) if obj.secrets else {}
        return {path: self.secrets.decrypt(token) for path, token in stored.items()}

    # -- checks -------------------------------------------------------------------------------

    def _check_kind_and_permission(self, caller: Caller, kind: str, write: bool) -> None:
        if kind not in KINDS:
            raise NotFound(f"unknown object kind {kind!r}")
        permission = PERMISSIONS[kind]
        if not caller.can(permission, write):
            raise Forbidden(
                f"user '{caller.username}' may not {'change' if write else 'read'} {kind} "
                f"objects in tenant '{caller.tenant_name}' (needs "
                f"{'WRITE_ACCESS' if write else 'READ_ACCESS'} on {permission})")

    def _home_tenant(self, caller: Caller, kind: str) -> str:
        return self.admin_tenant if kind in GLOBAL_KINDS else caller.tenant

    def _scope(self, caller: Caller, kind: str) -> Scope:
        return Scope(self._home_tenant(caller, kind), include_shared=kind not in GLOBAL_KINDS)

    def _visible(self, obj: StoredObject, tenant: str) -> bool:
        return obj.tenant == tenant or (obj.shared and obj.tenant == self.admin_tenant)

    def _load_visible(self, tx: Transaction, caller: Caller, kind: str, uuid: str) -> StoredObject:
        obj = tx.get(uuid) if isinstance(uuid, str) else None
        if obj is None or obj.kind != kind or not self._visible(obj, self._home_tenant(caller, kind)):
            raise NotFound(f"{kind} {uuid} not found")
        return obj

    def _load_writable(self, tx: Transaction, caller: Caller, kind: str, uuid: str) -> StoredObject:
        obj = self._load_visible(tx, caller, kind, uuid)
        if obj.tenant != self._home_tenant(caller, kind):
            raise Forbidden(f"{kind} '{obj.name}' belongs to the admin tenant and is read-only "
                            f"in tenant '{caller.tenant_name}'")
        return obj

    @staticmethod
    def _check_version(obj: StoredObject, expected: str | None) -> None:
        if expected is None or expected == "*":
            return
        if expected.strip('"').removeprefix("W/").strip('"') != obj.last_modified:
            raise PreconditionFailed(
                f"{obj.kind} '{obj.name}' was changed since version {expected} (now "
                f"{obj.last_modified}); read it again and reapply your change")

    def _check_unreferenced(self, tx: Transaction, caller: Caller, obj: StoredObject) -> None:
        referrers = tx.referrers(obj.uuid)
        if not referrers:
            return
        seen = []
        hidden = 0
        for ref in referrers:
            if ref.tenant in (caller.tenant, self.admin_tenant) or caller.superuser:
                text = f"{ref.kind} '{ref.name}' ({ref.uuid})"
                if text not in seen:
                    seen.append(text)
            else:
                hidden += 1
        names = ", ".join(seen[:5]) + (f" and {len(seen) - 5} more" if len(seen) > 5 else "")
        if hidden:
            names += (", and " if names else "") + f"{hidden} object(s) in other tenants"
        raise Conflict(f"{obj.kind} '{obj.name}' is referenced by {names}; remove the "
                       "reference first")

    def _check_tenant_empty(self, tx: Transaction, tenant: StoredObject) -> None:
        count = tx.count(tenant=tenant.uuid)
        if count:
            raise Conflict(f"tenant '{tenant.name}' still holds {count} object(s); delete them "
                           "first")

    @staticmethod
    def _filter_uuid(param: str, value: str | None) -> str | None:
        if value is None:
            return None
        kind, _, uuid = value.rpartition(":")
        if not is_uuid(uuid) or (kind and not is_uuid(uuid, kind)):
            raise InvalidInput(f"{param}: {value!r} is not <kind>:<uuid>, such as "
                               f"pool:{new_uuid('pool')}")
        return uuid

    # -- writing ------------------------------------------------------------------------------

    def _write(self, tx: Transaction, caller: Caller, kind: str, data: Any,
               current: StoredObject | None, *, slug: str | None = None, builtin: bool = False,
               if_match: str | None = None, version: str | None = None) -> StoredObject:
        """Validate `data` and insert it (current is None) or replace `current` with it."""
        if not isinstance(data, dict):
            raise InvalidInput("the body must be a JSON object")
        data = dict(data)
        for key in ("url", "last_modified"):
            data.pop(key, None)
        body_uuid = data.pop("uuid", None)
        body_tenant = data.pop("tenant_ref", None)
        body_version = data.pop("_last_modified", None)
        tenant = current.tenant if current else self._home_tenant(caller, kind)
        if current is not None:
            if body_uuid is not None and body_uuid != current.uuid:
                raise InvalidInput(f"uuid: {body_uuid!r} differs from the UUID in the URL")
            self._check_version(current, if_match)
            if body_version is not None:
                self._check_version(current, str(body_version))
        if body_tenant is not None:
            self._check_body_tenant(tx, body_tenant, tenant)

        existing_secrets = json.loads(current.secrets) if current and current.secrets else {}
        kept = self._prepare_secrets(kind, data, existing_secrets)
        cls = KINDS[kind]
        try:
            model = cls.model_validate(data)
        except pydantic.ValidationError as exc:
            raise InvalidInput.from_lines([line.removeprefix(": ")
                                           for line in describe_errors(exc)]) from None
        doc = model.model_dump(mode="json", by_alias=True, exclude_none=True,
                               exclude={"uuid", "url", "tenant_ref", "last_modified"})
        name = doc.pop("name")
        secrets = self._extract_secrets(kind, doc, kept)
        doc, references = self._resolve_refs(tx, kind, doc, tenant)
        self._check_semantics(tx, caller, kind, doc, current)

        clash = tx.find(kind, name, [tenant])
        if clash and (current is None or clash[0].uuid != current.uuid):
            raise Conflict(f"{kind} named '{name}' already exists in this tenant "
                           f"({clash[0].uuid}); choose another name")
        shared = tenant == self.admin_tenant and (builtin or kind in PROVIDER_KINDS
                                                  or (current is not None and current.builtin))
        obj = StoredObject(uuid=current.uuid if current else (slug or new_uuid(kind)),
                           kind=kind, tenant=tenant, name=name, body=doc,
                           secrets=json.dumps(secrets) if secrets else None, shared=shared,
                           builtin=current.builtin if current else builtin)
        try:
            if current is None:
                if tx.get(obj.uuid) is not None:
                    raise Conflict(f"an object with UUID {obj.uuid} already exists")
                tx.insert(obj, references)
            else:
                tx.update(obj, references, version or current.last_modified)
        except DuplicateObject:
            raise Conflict(f"{kind} '{name}' conflicts with a concurrent change; retry") from None
        except StaleObject:
            raise PreconditionFailed(f"{kind} '{name}' was changed by another request; read it "
                                     "again and reapply your change") from None
        except ReferenceViolation:
            raise Conflict(f"{kind} '{name}' refers to an object deleted meanwhile; "
                           "retry") from None
        if current is None:
            self._audit(tx, caller, "CREATE", obj,
                        {"body": doc, "secrets_set": sorted(secrets)})
        else:
            changed = {k: doc.get(k) for k in set(doc) | set(current.body)
                       if doc.get(k) != current.body.get(k)}
            if name != current.name:
                changed["name"] = name
            detail: dict[str, Any] = {"changed": changed}
            old_secrets = existing_secrets
            changed_secrets = sorted(p for p in set(secrets) | set(old_secrets)
                                     if secrets.get(p) != old_secrets.get(p))
            if changed_secrets:
                detail["secrets_changed"] = changed_secrets
            self._audit(tx, caller, "UPDATE", obj, detail)
            if kind == "user" and ("password" in changed_secrets
                                   or doc.get("is_active") is False):
                tx.delete_sessions(user_uuid=obj.uuid)
        return obj

    def _check_body_tenant(self, tx: Transaction, value: Any, tenant: str) -> None:
        try:
            ref = parse_ref(value, "tenant")
        except RefError as exc:
            raise InvalidInput(f"tenant_ref: {exc}") from None
        target = tx.get(ref.uuid) if ref.uuid else next(
            iter(tx.find("tenant", ref.name, [self.admin_tenant])), None)
        if target is None or target.uuid != tenant:
            raise InvalidInput("tenant_ref: objects belong to the tenant of the request "
                               "(chosen with the X-Avi-Tenant header); remove tenant_ref or "
                               "send the request in that tenant")

    def _prepare_secrets(self, kind: str, data: dict[str, Any],
                         existing: dict[str, str]) -> dict[str, str]:
        """Apply write-only semantics before validation. A secret that is omitted or sent back
        as "<sensitive>" keeps its stored value; null clears it. Returns {path: encrypted} of
        the kept ones."""
        kept: dict[str, str] = {}
        for path in SECRET_FIELDS[kind]:
            value = get_path(data, path)
            parent_present = "." not in path or isinstance(
                get_path(data, path.rsplit(".", 1)[0]), dict)
            explicit_null = value is None and _has_path(data, path)
            if value == SENSITIVE or (value is None and not explicit_null):
                if path in existing and parent_present:
                    kept[path] = existing[path]
                    if kind == "user":  # the stored value is a hash: nothing to validate
                        pop_path(data, path)
                    else:
                        set_path(data, path, self.secrets.decrypt(existing[path]))
                else:
                    pop_path(data, path)
        return kept

    def _extract_secrets(self, kind: str, doc: dict[str, Any],
                         kept: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for path in SECRET_FIELDS[kind]:
            value = pop_path(doc, path)
            if value is None:
                if path in kept:
                    out[path] = kept[path]
                continue
            if path in kept and self.secrets.decrypt(kept[path]) == value:
                out[path] = kept[path]
                continue
            if kind == "user" and path == "password":
                from vantage.controller.auth import hash_password
                value = hash_password(value, n=self.scrypt_n)
            out[path] = self.secrets.encrypt(value)
        return out

    def _resolve_refs(self, tx: Transaction, kind: str, doc: dict[str, Any], tenant: str,
                      partial: bool = False, prefix: str = "") -> tuple[dict[str, Any],
                                                                        list[tuple[str, str]]]:
        """Replace every reference in `doc` by the UUID it names. Returns the document and
        [(field path, uuid)]; raises InvalidInput naming each reference that resolves to no
        visible object."""
        errors: list[str] = []
        references: list[tuple[str, str]] = []

        def resolve(field: str, value: Any, target: str) -> Any:
            shown = f"{prefix}.{field}" if prefix else field
            if partial and isinstance(value, dict):
                return value  # a delete pattern such as {"pool_ref": ...} inside an item
            try:
                ref = parse_ref(value, target)
            except RefError as exc:
                errors.append(f"{shown}: {exc}")
                return value
            if ref.uuid:
                obj = tx.get(ref.uuid)
                if obj is None or obj.kind != target or not self._visible(obj, tenant):
                    errors.append(f"{shown}: no {target} with UUID {ref.uuid}")
                    return value
            else:
                obj = self.find_visible(tx, target, ref.name, tenant)
                if obj is None:
                    errors.append(f"{shown}: no {target} named '{ref.name}'")
                    return value
            references.append((field, obj.uuid))
            return obj.uuid

        for path, target in REF_PATHS[kind]:
            for field, container, key in iter_refs(doc, path):
                value = container[key]
                if isinstance(value, list):
                    container[key] = [resolve(f"{field}[{i}]", v, target)
                                      for i, v in enumerate(value)]
                else:
                    container[key] = resolve(field, value, target)
        if errors:
            raise InvalidInput.from_lines(errors)
        return doc, references

    def _check_semantics(self, tx: Transaction, caller: Caller, kind: str, doc: dict[str, Any],
                         current: StoredObject | None) -> None:
        """Rules that span fields or objects, beyond what the schema states."""
        if kind == "virtualservice" and doc.get("pool_ref") and doc.get("pool_group_ref"):
            raise InvalidInput("pool_group_ref: give pool_ref or pool_group_ref, not both")
        if kind == "user" and not caller.superuser and (
                doc.get("is_superuser") or (current and current.body.get("is_superuser"))):
            raise Forbidden("only a superuser may create or change a superuser")
        if kind == "user" and current is not None and _active_superuser(current.body) \
                and not _active_superuser(doc):
            if current.uuid == caller.user_uuid:
                raise Conflict(f"user '{current.name}' is the user making this request and "
                               "would lose its superuser rights; ask another superuser")
            self._check_other_superuser(tx, current)

    def _check_other_superuser(self, tx: Transaction, user: StoredObject) -> None:
        _, users = tx.list("user", Scope(self.admin_tenant, include_shared=False), limit=None)
        if not any(_active_superuser(u.body) for u in users if u.uuid != user.uuid):
            raise Conflict(f"user '{user.name}' is the last active superuser; make another "
                           "user a superuser first")

    def _audit(self, tx: Transaction, caller: Caller, action: str, obj: StoredObject,
               detail: dict[str, Any] | None = None) -> None:
        tx.add_audit(action=action, username=caller.username, tenant=obj.tenant, kind=obj.kind,
                     obj_uuid=obj.uuid, obj_name=obj.name, client=caller.client, detail=detail)

    # -- reading ------------------------------------------------------------------------------

    def _input_form(self, obj: StoredObject) -> dict[str, Any]:
        """The stored object as a request body would give it (refs as UUIDs, secrets left out
        so that they are kept)."""
        doc = copy.deepcopy(obj.body)
        doc["name"] = obj.name
        return doc

    def _to_wire(self, tx: Transaction, objs: list[StoredObject],
                 wire: WireOptions) -> list[dict[str, Any]]:
        base = wire.base_url.rstrip("/") + "/api/"
        names: dict[str, str] = {}
        if wire.include_name:
            wanted = {o.tenant for o in objs}
            for obj in objs:
                for _field, container, key in self._ref_slots(obj.kind, obj.body):
                    value = container[key]
                    wanted.update(value if isinstance(value, list) else [value])
            names = tx.names(wanted)

        def url(kind: str, uuid: str) -> str:
            if wire.include_name and uuid in names:
                return f"{base}{kind}/{uuid}#{names[uuid]}"
            return f"{base}{kind}/{uuid}"

        out = []
        for obj in objs:
            body = obj.body  # freshly parsed from the row: ours to change
            simple, nested = REF_FIELDS_SPLIT[obj.kind]
            for key, target in simple:
                value = body.get(key)
                if value is not None:
                    body[key] = ([url(target, v) for v in value] if isinstance(value, list)
                                 else url(target, value))
            for path, target in nested:
                for _field, container, key in iter_refs(body, path):
                    value = container[key]
                    container[key] = ([url(target, v) for v in value]
                                      if isinstance(value, list) else url(target, value))
            if obj.secrets and obj.kind not in HIDDEN_SECRET_KINDS:
                for path in json.loads(obj.secrets):
                    set_path(body, path, SENSITIVE)
            head = {"url": f"{base}{obj.kind}/{obj.uuid}", "uuid": obj.uuid, "name": obj.name,
                    "tenant_ref": url("tenant", obj.tenant),
                    "_last_modified": obj.last_modified}
            if wire.fields is not None:
                body = {k: v for k, v in body.items() if k in wire.fields}
                head = {k: v for k, v in head.items()
                        if k in ("url", "uuid", "name") or k in wire.fields}
            head.update(body)
            out.append(head)
        return out

    @staticmethod
    def _ref_slots(kind: str, body: dict[str, Any]):
        for path, _target in REF_PATHS[kind]:
            yield from iter_refs(body, path)


def _active_superuser(body: dict[str, Any]) -> bool:
    return bool(body.get("is_superuser")) and body.get("is_active", True)


def _has_path(doc: dict[str, Any], dotted: str) -> bool:
    *parents, last = dotted.split(".")
    node: Any = doc
    for seg in parents:
        node = node.get(seg) if isinstance(node, dict) else None
    return isinstance(node, dict) and last in node
