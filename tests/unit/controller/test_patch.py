"""Avi PATCH forms (add / replace / delete) and RFC 6902 json_patch."""
from __future__ import annotations

import pytest

from vantage.controller import patch
from vantage.controller.errors import InvalidInput

DOC = {"name": "web", "servers": [{"ip": {"addr": "10.0.0.1"}, "port": 80},
                                  {"ip": {"addr": "10.0.0.2"}, "port": 80}],
       "http_profile": {"xff_enabled": True, "keepalive_timeout": 100},
       "refs": ["a", "b"]}


def test_replace_merges_objects_and_replaces_lists():
    out = patch.apply(DOC, "replace", {"http_profile": {"keepalive_timeout": 5},
                                       "refs": ["c"]})
    assert out["http_profile"] == {"xff_enabled": True, "keepalive_timeout": 5}
    assert out["refs"] == ["c"]
    assert DOC["refs"] == ["a", "b"]  # the input is not changed


def test_add_appends_new_list_items_only():
    out = patch.apply(DOC, "add", {"refs": ["b", "c"], "description": "x"})
    assert out["refs"] == ["a", "b", "c"] and out["description"] == "x"


def test_delete_removes_matching_items_and_fields():
    out = patch.apply(DOC, "delete", {"servers": [{"ip": {"addr": "10.0.0.1"}}],
                                      "http_profile": {"keepalive_timeout": 100}})
    assert [s["ip"]["addr"] for s in out["servers"]] == ["10.0.0.2"]
    assert out["http_profile"] == {"xff_enabled": True}
    with pytest.raises(InvalidInput, match="delete.refs: no item matches"):
        patch.apply(DOC, "delete", {"refs": ["zzz"]})


def test_json_patch():
    out = patch.apply(DOC, "json_patch", [{"op": "remove", "path": "/servers/0"},
                                          {"op": "test", "path": "/name", "value": "web"}])
    assert len(out["servers"]) == 1
    with pytest.raises(InvalidInput, match="json_patch"):
        patch.apply(DOC, "json_patch", [{"op": "test", "path": "/name", "value": "db"}])
    with pytest.raises(InvalidInput, match="json_patch"):
        patch.apply(DOC, "json_patch", [{"op": "jump", "path": "/name"}])


@pytest.mark.parametrize("body", [{}, {"add": {}, "replace": {}}, {"upsert": {}},
                                  {"json_patch": {}}, {"replace": []}, "add"])
def test_bad_patch_bodies(body):
    with pytest.raises(InvalidInput):
        patch.operation_of(body)
