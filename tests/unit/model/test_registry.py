"""The kind registry: every kind known, refs located (nested too), built-in objects valid."""
from __future__ import annotations

from vantage.model.defaults import SYSTEM_OBJECTS
from vantage.model.registry import (
    KINDS,
    PERMISSIONS,
    REF_PATHS,
    SECRET_FIELDS,
    get_path,
    iter_refs,
    pop_path,
    set_path,
)

ISSUE_KINDS = {"cloud", "network", "serviceenginegroup", "serviceengine", "vsvip",
               "virtualservice", "pool", "poolgroup", "healthmonitor", "applicationprofile",
               "networkprofile", "applicationpersistenceprofile", "sslprofile",
               "sslkeyandcertificate", "httppolicyset", "tenant", "role", "user"}


def test_all_kinds_registered_with_permissions():
    assert set(KINDS) == ISSUE_KINDS
    assert PERMISSIONS["virtualservice"] == "PERMISSION_VIRTUALSERVICE"


def test_every_ref_target_is_a_kind():
    for kind, paths in REF_PATHS.items():
        for path, target in paths:
            assert target in KINDS, (kind, path)


def test_iter_refs_walks_nested_lists():
    doc = {"services": [{"port": 80, "override_application_profile_ref": "a"},
                        {"port": 81}, {"port": 82, "override_application_profile_ref": "b"}]}
    found = [(p, c[k]) for p, c, k in iter_refs(
        doc, "services[].override_application_profile_ref")]
    assert found == [("services[0].override_application_profile_ref", "a"),
                     ("services[2].override_application_profile_ref", "b")]
    assert list(iter_refs({}, "pool_ref")) == []


def test_dotted_path_helpers():
    doc = {"vcenter_configuration": {"password": "x"}}
    assert get_path(doc, "vcenter_configuration.password") == "x"
    assert set_path(doc, "vcenter_configuration.password", "y")
    assert not set_path(doc, "openstack_configuration.password", "y")
    assert pop_path(doc, "vcenter_configuration.password") == "y"
    assert doc == {"vcenter_configuration": {}}
    assert SECRET_FIELDS["sslkeyandcertificate"] == ("key", "key_passphrase")


def test_system_objects_validate():
    for kind, items in SYSTEM_OBJECTS.items():
        for item in items:
            KINDS[kind].model_validate(item)
