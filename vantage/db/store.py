"""The configuration store: objects as JSON documents, their references, sessions, API tokens
and the audit log, in SQLite (the default, WAL mode) or PostgreSQL.

All methods are synchronous and run inside a `Transaction`; the API runs them in worker threads.
Concurrency control is optimistic: an update names the `last_modified` it was based on and fails
with `StaleObject` when another writer got there first.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event

from vantage.db import migrate
from vantage.db.schema import auditlog, objects, refs, sessions, tokens


class StoreError(Exception):
    """Base of the store's errors."""


class StaleObject(StoreError):
    """The object changed (or vanished) since the version the update was based on."""


class DuplicateObject(StoreError):
    """Another object already has this UUID, or this name in this kind and tenant."""


class ReferenceViolation(StoreError):
    """A write would leave a reference pointing at nothing (the database refused it)."""


class InvalidValue(StoreError):
    """The database cannot hold a value (PostgreSQL refuses NUL characters in text)."""


@dataclasses.dataclass
class StoredObject:
    uuid: str
    kind: str
    tenant: str
    name: str
    body: dict[str, Any]
    last_modified: str = ""
    secrets: str | None = None
    shared: bool = False
    builtin: bool = False


@dataclasses.dataclass(frozen=True)
class Scope:
    """Which objects a query sees: those of `tenant`, plus the admin tenant's shared ones."""

    tenant: str
    include_shared: bool = True


@dataclasses.dataclass(frozen=True)
class Referrer:
    uuid: str
    kind: str
    name: str
    field: str
    tenant: str


_OBJ_COLS = (objects.c.uuid, objects.c.kind, objects.c.tenant, objects.c.name, objects.c.body,
             objects.c.last_modified, objects.c.secrets, objects.c.shared, objects.c.builtin)

SORT_COLUMNS = {"name": objects.c.name, "uuid": objects.c.uuid,
                "_last_modified": objects.c.last_modified}


_COLS = "uuid, kind, tenant, name, body, last_modified, secrets, shared, builtin"

# The hot statements, as plain SQL with `:name` parameters (converted to the driver's style
# once), executed without SQLAlchemy's statement compilation: most requests are one or two of
# these, and compiling expressions cost more than running them.
_SQL = {
    "get": f"SELECT {_COLS} FROM objects WHERE uuid = :uuid",
    "find": f"SELECT {_COLS} FROM objects WHERE kind = :kind AND name = :name "
            "AND tenant IN (:t1, :t2)",
    "insert": "INSERT INTO objects (uuid, kind, tenant, name, body, secrets, last_modified, "
              "shared, builtin) VALUES (:uuid, :kind, :tenant, :name, :body, :secrets, "
              ":last_modified, :shared, :builtin)",
    "update": "UPDATE objects SET name = :name, body = :body, secrets = :secrets, "
              "last_modified = :new, shared = :shared WHERE uuid = :uuid AND last_modified = :old",
    "insert_ref": "INSERT INTO refs (from_uuid, field, to_uuid) VALUES (:from_uuid, :field, "
                  ":to_uuid)",
    "delete_refs": "DELETE FROM refs WHERE from_uuid = :uuid",
    "referrers": "SELECT o.uuid, o.kind, o.name, r.field, o.tenant FROM refs r "
                 "JOIN objects o ON o.uuid = r.from_uuid WHERE r.to_uuid = :uuid "
                 "AND r.from_uuid <> :uuid ORDER BY o.kind, o.name",
    "get_session": "SELECT id, user_uuid, csrf_token, created, last_seen, client FROM sessions "
                   "WHERE id = :id",
    "touch_session": "UPDATE sessions SET last_seen = :now WHERE id = :id",
    "find_token": "SELECT uuid, token_hash, user_uuid, name, created, expires, last_used "
                  "FROM tokens WHERE token_hash = :hash",
    "add_audit": "INSERT INTO auditlog (ts, username, tenant, action, kind, obj_uuid, obj_name, "
                 "client, detail) VALUES (:ts, :username, :tenant, :action, :kind, :obj_uuid, "
                 ":obj_name, :client, :detail)",
}
_PARAM = re.compile(r"(?<![:\w]):([a-z_0-9]+)")


def _statements(dialect: sa.Dialect) -> dict[str, str]:
    if dialect.name == "sqlite":  # sqlite3 takes :name with a dict whatever its paramstyle
        return dict(_SQL)
    if dialect.paramstyle == "pyformat":
        return {k: _PARAM.sub(r"%(\1)s", v) for k, v in _SQL.items()}
    raise ValueError(f"unsupported database driver {dialect.driver!r} (paramstyle "
                     f"{dialect.paramstyle!r}); use sqlite or postgresql+psycopg")


def _row_to_obj(row) -> StoredObject:
    return StoredObject(uuid=row[0], kind=row[1], tenant=row[2], name=row[3],
                        body=orjson.loads(row[4]), last_modified=row[5], secrets=row[6],
                        shared=bool(row[7]), builtin=bool(row[8]))


def _dumps(doc: dict[str, Any]) -> str:
    return orjson.dumps(doc).decode()


class _Clock:
    """Microsecond timestamps (as Avi's `_last_modified`), strictly increasing per process."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            now = time.time_ns() // 1000
            self._last = now if now > self._last else self._last + 1
            return str(self._last)


class Transaction:
    """One database transaction; every query and write of the store goes through one."""

    def __init__(self, conn: sa.Connection, clock: _Clock, sql: dict[str, str]) -> None:
        self.conn = conn
        self._clock = clock
        self._sql = sql

    def _run(self, name: str, params):
        return self.conn.exec_driver_sql(self._sql[name], params)

    # -- objects ------------------------------------------------------------------------------

    def get(self, uuid: str) -> StoredObject | None:
        row = self._run("get", {"uuid": uuid}).first()
        return _row_to_obj(row) if row else None

    def get_many(self, uuids: Iterable[str]) -> dict[str, StoredObject]:
        wanted = list(set(uuids))
        if not wanted:
            return {}
        rows = self.conn.execute(sa.select(*_OBJ_COLS).where(objects.c.uuid.in_(wanted)))
        return {row[0]: _row_to_obj(row) for row in rows}

    def names(self, uuids: Iterable[str]) -> dict[str, str]:
        wanted = list(set(uuids))
        if not wanted:
            return {}
        rows = self.conn.execute(sa.select(objects.c.uuid, objects.c.name)
                                 .where(objects.c.uuid.in_(wanted)))
        return dict(rows.all())

    def find(self, kind: str, name: str, tenants: Iterable[str]) -> list[StoredObject]:
        """Objects of `kind` named `name` in any of `tenants` (one or two)."""
        t1, *rest = list(tenants)
        rows = self._run("find", {"kind": kind, "name": name, "t1": t1,
                                  "t2": rest[0] if rest else t1})
        return [_row_to_obj(row) for row in rows]

    def _visible(self, kind: str, scope: Scope, admin_tenant: str | None):
        clause = objects.c.tenant == scope.tenant
        if scope.include_shared and admin_tenant and admin_tenant != scope.tenant:
            # IN first, so that the (kind, tenant, name) index narrows the rows to two tenants
            clause = sa.and_(objects.c.tenant.in_([scope.tenant, admin_tenant]),
                             sa.or_(clause, objects.c.shared.is_(True)))
        return sa.and_(objects.c.kind == kind, clause)

    def list(self, kind: str, scope: Scope | None, *, admin_tenant: str | None = None,
             name: str | None = None, name_contains: str | None = None,
             refers_to: str | None = None, referred_by: str | None = None,
             sort: str = "name", descending: bool = False, offset: int = 0,
             limit: int | None = 25) -> tuple[int, list[StoredObject]]:
        """(total count, one page) of the objects of `kind` visible in `scope` (all tenants
        when `scope` is None), filtered and sorted."""
        where = [self._visible(kind, scope, admin_tenant) if scope else objects.c.kind == kind]
        if name is not None:
            where.append(objects.c.name == name)
        if name_contains:
            escaped = (name_contains.replace("\\", "\\\\").replace("%", "\\%")
                       .replace("_", "\\_"))
            where.append(objects.c.name.ilike(f"%{escaped}%", escape="\\"))
        if refers_to is not None:
            where.append(objects.c.uuid.in_(
                sa.select(refs.c.from_uuid).where(refs.c.to_uuid == refers_to)))
        if referred_by is not None:
            where.append(objects.c.uuid.in_(
                sa.select(refs.c.to_uuid).where(refs.c.from_uuid == referred_by)))
        count = self.conn.execute(
            sa.select(sa.func.count()).select_from(objects).where(*where)).scalar_one()
        column = SORT_COLUMNS[sort]
        order = [column.desc() if descending else column.asc()]
        if sort != "uuid":
            order.append(objects.c.uuid.asc())
        query = sa.select(*_OBJ_COLS).where(*where).order_by(*order).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        return count, [_row_to_obj(row) for row in self.conn.execute(query)]

    def insert(self, obj: StoredObject, references: Iterable[tuple[str, str]] = ()) -> StoredObject:
        """Insert `obj` and its references [(field path, referenced uuid)]; sets last_modified."""
        obj.last_modified = self._clock.next()
        try:
            self._run("insert", {
                "uuid": obj.uuid, "kind": obj.kind, "tenant": obj.tenant, "name": obj.name,
                "body": _dumps(obj.body), "secrets": obj.secrets,
                "last_modified": obj.last_modified, "shared": obj.shared,
                "builtin": obj.builtin})
        except sa.exc.IntegrityError:
            raise DuplicateObject(obj.uuid) from None
        self._write_refs(obj.uuid, references)
        return obj

    def update(self, obj: StoredObject, references: Iterable[tuple[str, str]] | None,
               expected_last_modified: str) -> StoredObject:
        """Replace `obj` (same uuid) if it is still at `expected_last_modified`, and its
        references when `references` is given."""
        new_version = self._clock.next()
        try:
            result = self._run("update", {
                "uuid": obj.uuid, "old": expected_last_modified, "name": obj.name,
                "body": _dumps(obj.body), "secrets": obj.secrets, "new": new_version,
                "shared": obj.shared})
        except sa.exc.IntegrityError:
            raise DuplicateObject(obj.uuid) from None
        if result.rowcount != 1:
            raise StaleObject(obj.uuid)
        obj.last_modified = new_version
        if references is not None:
            self._run("delete_refs", {"uuid": obj.uuid})
            self._write_refs(obj.uuid, references)
        return obj

    def _write_refs(self, from_uuid: str, references: Iterable[tuple[str, str]]) -> None:
        rows = [{"from_uuid": from_uuid, "field": field, "to_uuid": to}
                for field, to in dict.fromkeys(references)]
        if not rows:
            return
        try:
            self._run("insert_ref", rows)
        except sa.exc.IntegrityError:
            raise ReferenceViolation(from_uuid) from None

    def delete(self, uuid: str, expected_last_modified: str | None = None) -> None:
        where = [objects.c.uuid == uuid]
        if expected_last_modified is not None:
            where.append(objects.c.last_modified == expected_last_modified)
        try:
            with self.conn.begin_nested():
                self.conn.execute(refs.delete().where(refs.c.from_uuid == uuid))
                result = self.conn.execute(objects.delete().where(*where))
        except sa.exc.IntegrityError:
            raise ReferenceViolation(uuid) from None
        if result.rowcount != 1:
            raise StaleObject(uuid)

    def referrers(self, uuid: str) -> list[Referrer]:
        return [Referrer(*row) for row in self._run("referrers", {"uuid": uuid})]

    def count(self, kind: str | None = None, tenant: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(objects)
        if kind is not None:
            query = query.where(objects.c.kind == kind)
        if tenant is not None:
            query = query.where(objects.c.tenant == tenant)
        return self.conn.execute(query).scalar_one()

    # -- sessions -----------------------------------------------------------------------------

    def add_session(self, session_id: str, user_uuid: str, csrf_token: str,
                    client: str | None, now: float) -> None:
        self.conn.execute(sessions.insert().values(
            id=session_id, user_uuid=user_uuid, csrf_token=csrf_token, created=now,
            last_seen=now, client=client))

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        row = self._run("get_session", {"id": session_id}).first()
        return dict(row._mapping) if row else None

    def touch_session(self, session_id: str, now: float) -> None:
        self._run("touch_session", {"id": session_id, "now": now})

    def delete_session(self, session_id: str) -> None:
        self.conn.execute(sessions.delete().where(sessions.c.id == session_id))

    def delete_sessions(self, *, user_uuid: str | None = None,
                        idle_before: float | None = None,
                        created_before: float | None = None) -> int:
        clauses = []
        if user_uuid is not None:
            clauses.append(sessions.c.user_uuid == user_uuid)
        if idle_before is not None:
            clauses.append(sessions.c.last_seen < idle_before)
        if created_before is not None:
            clauses.append(sessions.c.created < created_before)
        if not clauses:
            raise ValueError("refusing to delete every session without a condition")
        return self.conn.execute(sessions.delete().where(sa.or_(*clauses)
                                                         if user_uuid is None
                                                         else sa.and_(*clauses))).rowcount

    # -- API tokens ---------------------------------------------------------------------------

    def add_token(self, uuid: str, token_hash: str, user_uuid: str, name: str, now: float,
                  expires: float | None) -> dict[str, Any]:
        values = {"uuid": uuid, "token_hash": token_hash, "user_uuid": user_uuid, "name": name,
                  "created": now, "expires": expires, "last_used": None}
        self.conn.execute(tokens.insert().values(**values))
        return values

    def find_token(self, token_hash: str) -> dict[str, Any] | None:
        row = self._run("find_token", {"hash": token_hash}).first()
        return dict(row._mapping) if row else None

    def get_token(self, uuid: str) -> dict[str, Any] | None:
        row = self.conn.execute(sa.select(tokens).where(tokens.c.uuid == uuid)).first()
        return dict(row._mapping) if row else None

    def list_tokens(self, user_uuid: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(tokens).order_by(tokens.c.created)
        if user_uuid is not None:
            query = query.where(tokens.c.user_uuid == user_uuid)
        return [dict(row._mapping) for row in self.conn.execute(query)]

    def touch_token(self, uuid: str, now: float) -> None:
        self.conn.execute(tokens.update().where(tokens.c.uuid == uuid).values(last_used=now))

    def delete_token(self, uuid: str) -> bool:
        return self.conn.execute(tokens.delete().where(tokens.c.uuid == uuid)).rowcount == 1

    def delete_tokens(self, user_uuid: str) -> int:
        return self.conn.execute(tokens.delete().where(tokens.c.user_uuid == user_uuid)).rowcount

    # -- audit log ----------------------------------------------------------------------------

    def add_audit(self, *, action: str, username: str | None, tenant: str | None,
                  kind: str | None = None, obj_uuid: str | None = None,
                  obj_name: str | None = None, client: str | None = None,
                  detail: dict[str, Any] | None = None, now: float | None = None) -> None:
        self._run("add_audit", {
            "ts": now if now is not None else time.time(), "username": username,
            "tenant": tenant, "action": action, "kind": kind, "obj_uuid": obj_uuid,
            "obj_name": obj_name, "client": client,
            "detail": _dumps(detail) if detail is not None else None})

    def list_audit(self, *, tenant: str | None = None, kind: str | None = None,
                   obj_uuid: str | None = None, username: str | None = None,
                   action: str | None = None, since: float | None = None,
                   offset: int = 0, limit: int = 25) -> tuple[int, list[dict[str, Any]]]:
        where = []
        for column, value in ((auditlog.c.tenant, tenant), (auditlog.c.kind, kind),
                              (auditlog.c.obj_uuid, obj_uuid), (auditlog.c.username, username),
                              (auditlog.c.action, action)):
            if value is not None:
                where.append(column == value)
        if since is not None:
            where.append(auditlog.c.ts >= since)
        count = self.conn.execute(
            sa.select(sa.func.count()).select_from(auditlog).where(*where)).scalar_one()
        rows = self.conn.execute(sa.select(auditlog).where(*where)
                                 .order_by(auditlog.c.id.desc()).offset(offset).limit(limit))
        out = []
        for row in rows:
            entry = dict(row._mapping)
            entry["detail"] = orjson.loads(entry["detail"]) if entry["detail"] else None
            out.append(entry)
        return count, out


def default_sqlite_url(state_path: str) -> str:
    import os
    return "sqlite:///" + os.path.join(state_path, "vantage.db")


class Store:
    """The configuration store at one database URL."""

    def __init__(self, url: str, *, pool_size: int = 8, busy_timeout: float = 10.0) -> None:
        self.url = sa.make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self._clock = _Clock()
        if self.is_sqlite:
            self.engine = sa.create_engine(
                self.url, connect_args={"check_same_thread": False, "timeout": busy_timeout},
                poolclass=sa.pool.QueuePool, pool_size=2, max_overflow=4)
            self._setup_sqlite(busy_timeout)
        else:
            self.engine = sa.create_engine(self.url, pool_size=pool_size, max_overflow=pool_size,
                                           pool_pre_ping=True)

    def _setup_sqlite(self, busy_timeout: float) -> None:
        # pysqlite's own transaction handling begins transactions late and never for SELECT;
        # take control so that reads see one snapshot and writers take the lock up front
        # (BEGIN IMMEDIATE), which avoids lock-upgrade deadlocks between writers.
        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            cur.close()

        @event.listens_for(self.engine, "begin")
        def _on_begin(conn):
            immediate = conn.get_execution_options().get("vantage_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    @property
    def _statements(self) -> dict[str, str]:
        sql = getattr(self, "_sql", None)
        if sql is None:
            sql = self._sql = _statements(self.engine.dialect)
        return sql

    def upgrade(self) -> None:
        """Create or migrate the schema to the newest revision."""
        migrate.upgrade(self.engine)

    @contextlib.contextmanager
    def begin(self, write: bool = False) -> Iterator[Transaction]:
        """A transaction, committed when the block ends normally and rolled back otherwise."""
        try:
            with self.engine.connect() as conn:
                if write:
                    conn = conn.execution_options(vantage_write=True)
                with conn.begin():
                    yield Transaction(conn, self._clock, self._statements)
        except sa.exc.DataError:
            raise InvalidValue("a value holds characters the database cannot store (such as "
                               "NUL)") from None

    def dispose(self) -> None:
        self.engine.dispose()
