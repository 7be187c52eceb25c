"""PATCH bodies as Avi takes them: `{"add"|"replace"|"delete": {<partial object>}}`, or
`{"json_patch": [<RFC 6902 operations>]}`. Each turns the current document into a new one,
which is then validated like a PUT body."""
from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer

from vantage.controller.errors import InvalidInput

OPERATIONS = ("add", "replace", "delete", "json_patch")


def operation_of(body: Any) -> tuple[str, Any]:
    if not isinstance(body, dict) or len(body) != 1 or next(iter(body)) not in OPERATIONS:
        raise InvalidInput("a PATCH body is one of {\"add\": {...}}, {\"replace\": {...}}, "
                           "{\"delete\": {...}} or {\"json_patch\": [...]}")
    op, value = next(iter(body.items()))
    if op == "json_patch":
        if not isinstance(value, list):
            raise InvalidInput("json_patch: must be a list of RFC 6902 operations")
    elif not isinstance(value, dict):
        raise InvalidInput(f"{op}: must be an object holding the fields to {op}")
    return op, value


def apply(current: dict[str, Any], op: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(current)
    if op == "json_patch":
        try:
            return jsonpatch.apply_patch(doc, value)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException,
                TypeError, KeyError, ValueError) as exc:
            raise InvalidInput(f"json_patch: {exc}") from None
    {"replace": _replace, "add": _add, "delete": _delete}[op](doc, value, op)
    return doc


def _replace(doc: dict[str, Any], value: dict[str, Any], path: str) -> None:
    for key, new in value.items():
        if isinstance(new, dict) and isinstance(doc.get(key), dict):
            _replace(doc[key], new, f"{path}.{key}")
        else:
            doc[key] = copy.deepcopy(new)


def _add(doc: dict[str, Any], value: dict[str, Any], path: str) -> None:
    for key, new in value.items():
        old = doc.get(key)
        if isinstance(old, list):
            items = new if isinstance(new, list) else [new]
            old.extend(copy.deepcopy(i) for i in items if i not in old)
        elif isinstance(new, dict) and isinstance(old, dict):
            _add(old, new, f"{path}.{key}")
        else:
            doc[key] = copy.deepcopy(new)


def _matches(item: Any, pattern: Any) -> bool:
    if isinstance(pattern, dict) and isinstance(item, dict):
        return all(k in item and _matches(item[k], v) for k, v in pattern.items())
    return item == pattern


def _delete(doc: dict[str, Any], value: dict[str, Any], path: str) -> None:
    for key, pattern in value.items():
        old = doc.get(key)
        if isinstance(old, list):
            patterns = pattern if isinstance(pattern, list) else [pattern]
            kept = [i for i in old if not any(_matches(i, p) for p in patterns)]
            if len(kept) == len(old):
                raise InvalidInput(f"{path}.{key}: no item matches {patterns!r}")
            doc[key] = kept
        elif isinstance(pattern, dict) and pattern and isinstance(old, dict):
            _delete(old, pattern, f"{path}.{key}")
        else:
            doc.pop(key, None)
