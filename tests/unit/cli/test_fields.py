"""`--field` and `--json` parsing."""
import pytest

from vantage.cli.fields import (
    deep_merge,
    parse_fields,
    parse_json_argument,
    parse_value,
)
from vantage.client import ClientError


@pytest.mark.parametrize("text,value", [
    ("80", 80), ("true", True), ("null", None), ("1.5", 1.5), ("web", "web"),
    ('"80"', "80"), ("[1, 2]", [1, 2]), ('{"a": 1}', {"a": 1}), ("GET / HTTP/1.1", "GET / HTTP/1.1"),
    ("", ""),
])
def test_parse_value(text, value):
    assert parse_value(text) == value


def test_parse_fields_nests_dotted_keys():
    assert parse_fields(["a=1", "b.c=x", "b.d.e=true", "f=a=b"]) == {
        "a": 1, "b": {"c": "x", "d": {"e": True}}, "f": "a=b"}


@pytest.mark.parametrize("item", ["novalue", "=1", "a..b=1", "a b=1", "1a=2"])
def test_parse_fields_rejects_bad_keys(item):
    with pytest.raises(ClientError, match="expected KEY=VALUE"):
        parse_fields([item])


def test_parse_fields_rejects_nesting_into_a_scalar():
    with pytest.raises(ClientError, match="'a' was already given a value that is not an object"
                       .replace("'a'", "a")):
        parse_fields(["a=1", "a.b=2"])


def test_parse_json_argument_file_errors(tmp_path):
    with pytest.raises(ClientError, match="No such file"):
        parse_json_argument(f"@{tmp_path / 'missing.json'}")


def test_deep_merge_merges_objects_and_replaces_lists():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    merged = deep_merge(base, {"a": {"y": [3], "z": 2}, "c": 3})
    assert merged == {"a": {"x": 1, "y": [3], "z": 2}, "b": 1, "c": 3}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 1}  # untouched
