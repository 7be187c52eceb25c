"""The configuration store: objects, references, optimistic concurrency, sessions, tokens,
audit log. The same tests run against PostgreSQL in tests/integration/test_postgresql.py
(they only use the `store` fixture)."""
from __future__ import annotations

import threading

import pytest

from vantage.db import migrate
from vantage.db.store import (
    DuplicateObject,
    ReferenceViolation,
    Scope,
    StaleObject,
    Store,
    StoredObject,
)

ADMIN = "tenant-00000000-0000-4000-8000-000000000001"
OTHER = "tenant-00000000-0000-4000-8000-000000000002"


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/vantage.db")
    s.upgrade()
    yield s
    s.dispose()


def _obj(kind, n, tenant=ADMIN, name=None, **kw):
    return StoredObject(uuid=f"{kind}-00000000-0000-4000-8000-{n:012d}", kind=kind,
                        tenant=tenant, name=name or f"{kind}{n}", body=kw.pop("body", {}), **kw)


def _seed(store):
    with store.begin(write=True) as tx:
        tx.insert(_obj("tenant", 1, name="admin"))
        tx.insert(_obj("tenant", 2, name="other"))


def test_upgrade_is_idempotent_and_at_head(store):
    store.upgrade()
    assert migrate.current_revision(store.engine) == migrate.head_revision()


def test_insert_get_roundtrip_keeps_document_and_sets_version(store):
    _seed(store)
    with store.begin(write=True) as tx:
        obj = tx.insert(_obj("pool", 1, body={"servers": [{"ip": {"addr": "10.0.0.1"}}],
                                              "text": "ünïcode ' \" ; DROP TABLE objects; --"}))
    assert obj.last_modified.isdigit()
    with store.begin() as tx:
        got = tx.get(obj.uuid)
    assert got.body == obj.body and got.name == "pool1" and got.last_modified == obj.last_modified
    assert got.body["text"].endswith("DROP TABLE objects; --")


def test_versions_increase_strictly(store):
    _seed(store)
    with store.begin(write=True) as tx:
        versions = [int(tx.insert(_obj("pool", n)).last_modified) for n in range(1, 20)]
    assert versions == sorted(set(versions))


def test_duplicate_name_in_same_tenant_is_refused_but_allowed_elsewhere(store):
    _seed(store)
    with store.begin(write=True) as tx:
        tx.insert(_obj("pool", 1, name="web"))
        tx.insert(_obj("pool", 2, name="web", tenant=OTHER))
        tx.insert(_obj("healthmonitor", 3, name="web"))
    with pytest.raises(DuplicateObject), store.begin(write=True) as tx:
        tx.insert(_obj("pool", 4, name="web"))


def test_stale_update_is_refused(store):
    _seed(store)
    with store.begin(write=True) as tx:
        obj = tx.insert(_obj("pool", 1))
    first = obj.last_modified
    obj.body = {"a": 1}
    with store.begin(write=True) as tx:
        tx.update(obj, None, first)
    assert obj.last_modified != first
    obj.body = {"a": 2}
    with pytest.raises(StaleObject), store.begin(write=True) as tx:
        tx.update(obj, None, first)
    with store.begin() as tx:
        assert tx.get(obj.uuid).body == {"a": 1}


def test_references_block_delete_and_list_referrers(store):
    _seed(store)
    with store.begin(write=True) as tx:
        pool = tx.insert(_obj("pool", 1, name="web"))
        tx.insert(_obj("virtualservice", 2, name="shop"), [("pool_ref", pool.uuid)])
    with store.begin() as tx:
        refs = tx.referrers(pool.uuid)
    assert [(r.kind, r.name, r.field) for r in refs] == [("virtualservice", "shop", "pool_ref")]
    with pytest.raises(ReferenceViolation), store.begin(write=True) as tx:
        tx.delete(pool.uuid)
    with store.begin(write=True) as tx:
        tx.delete(refs[0].uuid)
        tx.delete(pool.uuid)
    with store.begin() as tx:
        assert tx.get(pool.uuid) is None


def test_reference_to_missing_object_is_refused(store):
    _seed(store)
    with pytest.raises(ReferenceViolation), store.begin(write=True) as tx:
        tx.insert(_obj("virtualservice", 2), [("pool_ref", "pool-missing")])
    with store.begin() as tx:
        assert tx.get(_obj("virtualservice", 2).uuid) is None  # rolled back as a whole


def test_list_pages_sorts_filters_and_counts(store):
    _seed(store)
    with store.begin(write=True) as tx:
        for n in range(1, 31):
            tx.insert(_obj("pool", n, name=f"web-{n:02d}"))
        tx.insert(_obj("pool", 99, name="hidden", tenant=OTHER))
        tx.insert(_obj("pool", 98, name="System-Shared", shared=True, builtin=True))
        vs = tx.insert(_obj("virtualservice", 50), [("pool_ref", _obj("pool", 7).uuid)])
    with store.begin() as tx:
        count, page = tx.list("pool", Scope(ADMIN), admin_tenant=ADMIN, offset=10, limit=10)
        assert count == 31 and page[0].name == "web-10"
        count, page = tx.list("pool", Scope(OTHER), admin_tenant=ADMIN, limit=50)
        assert {o.name for o in page} == {"hidden", "System-Shared"}
        count, page = tx.list("pool", Scope(OTHER, include_shared=False), admin_tenant=ADMIN)
        assert [o.name for o in page] == ["hidden"]
        _, page = tx.list("pool", Scope(ADMIN), admin_tenant=ADMIN, sort="name",
                          descending=True, limit=1)
        assert page[0].name == "web-30"
        count, page = tx.list("pool", Scope(ADMIN), admin_tenant=ADMIN, name_contains="B-2")
        assert count == 10  # web-20..web-29, matched case-insensitively
        count, page = tx.list("pool", Scope(ADMIN), admin_tenant=ADMIN, name_contains="%")
        assert count == 0  # LIKE wildcards are escaped
        _, page = tx.list("pool", Scope(ADMIN), admin_tenant=ADMIN, name="web-03")
        assert [o.name for o in page] == ["web-03"]
        _, page = tx.list("virtualservice", Scope(ADMIN), admin_tenant=ADMIN,
                          refers_to=_obj("pool", 7).uuid)
        assert [o.uuid for o in page] == [vs.uuid]
        _, page = tx.list("pool", Scope(ADMIN), admin_tenant=ADMIN, referred_by=vs.uuid)
        assert [o.name for o in page] == ["web-07"]


def test_concurrent_writers_all_land(store):
    _seed(store)
    errors = []

    def writer(base):
        try:
            for n in range(base, base + 25):
                with store.begin(write=True) as tx:
                    tx.insert(_obj("pool", n))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i * 100,)) for i in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    with store.begin() as tx:
        assert tx.count("pool") == 100


def test_sessions_tokens_and_expiry(store):
    with store.begin(write=True) as tx:
        tx.add_session("s1", "user-1", "csrf", "127.0.0.1", now=100.0)
        tx.add_session("s2", "user-1", "csrf", None, now=200.0)
        tx.add_token("usertoken-1", "h1", "user-1", "ci", now=100.0, expires=None)
    with store.begin(write=True) as tx:
        tx.touch_session("s2", 500.0)
        assert tx.get_session("s2")["last_seen"] == 500.0
        assert tx.delete_sessions(idle_before=300.0) == 1
        assert tx.get_session("s1") is None
        assert tx.find_token("h1")["name"] == "ci"
        assert tx.delete_token("usertoken-1") and tx.find_token("h1") is None


def test_audit_log_is_filtered_and_newest_first(store):
    with store.begin(write=True) as tx:
        tx.add_audit(action="CREATE", username="admin", tenant=ADMIN, kind="pool",
                     obj_uuid="pool-1", detail={"body": {"a": 1}})
        tx.add_audit(action="DELETE", username="admin", tenant=OTHER, kind="pool")
    with store.begin() as tx:
        count, rows = tx.list_audit()
        assert count == 2 and rows[0]["action"] == "DELETE"
        count, rows = tx.list_audit(tenant=ADMIN)
        assert count == 1 and rows[0]["detail"] == {"body": {"a": 1}}
