"""Turning `--field key=value` and `--json '{...}'` arguments into request bodies, so that every
field of every kind can be set from the command line."""
from __future__ import annotations

import copy
import json
import pathlib
import re
from collections.abc import Iterable
from typing import Any

from vantage.client import ClientError

_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def parse_value(text: str) -> Any:
    """JSON when it parses as JSON (numbers, true/false/null, lists, objects, quoted strings),
    otherwise the text itself: `port=80` → 80, `name=web` → "web"."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_fields(assignments: Iterable[str]) -> dict[str, Any]:
    """`["a=1", "b.c=x"]` → `{"a": 1, "b": {"c": "x"}}`. Dotted keys build nested objects."""
    body: dict[str, Any] = {}
    for item in assignments:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not _KEY_RE.match(key):
            raise ClientError(f"--field {item!r}: expected KEY=VALUE, e.g. "
                              "--field default_server_port=8080 or "
                              "--field http_monitor.http_request='GET /health'")
        node = body
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ClientError(f"--field {item!r}: {'.'.join(parts[:i + 1])} was already "
                                  "given a value that is not an object")
            node = child
        node[parts[-1]] = parse_value(text)
    return body


def parse_json_argument(text: str) -> dict[str, Any]:
    """`--json '{...}'`, or `--json @file.json` to read it from a file."""
    source = "--json"
    if text.startswith("@"):
        path = pathlib.Path(text[1:])
        try:
            text = path.read_text()
        except OSError as exc:
            raise ClientError(f"--json {path}: {exc.strerror}") from None
        source = f"--json @{path}"
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ClientError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ClientError(f"{source} must be a JSON object, not {type(value).__name__}")
    return value


def deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`changes` over `base`: objects merge key by key, anything else (lists too) replaces."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
