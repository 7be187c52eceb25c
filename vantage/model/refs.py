"""References between objects: how they are written and how they are read back.

A reference may be written as a URL (`https://ctrl/api/pool/pool-<uuid>`), a path
(`/api/pool/pool-<uuid>`), a name query (`/api/pool?name=web`), a bare UUID (`pool-<uuid>`),
or, in an SE configuration file only, a bare name (`web`).
"""
from __future__ import annotations

import dataclasses
import re
import urllib.parse

_UUID_RE = re.compile(r"^(?P<kind>[a-z]+)-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                      r"[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclasses.dataclass(frozen=True)
class Ref:
    kind: str
    uuid: str | None = None
    name: str | None = None


class RefError(ValueError):
    pass


def is_uuid(value: str, kind: str | None = None) -> bool:
    match = _UUID_RE.match(value)
    return bool(match) and (kind is None or match.group("kind") == kind)


def parse_ref(value: str, kind: str, allow_bare_name: bool = False) -> Ref:
    """Parse one reference to an object of `kind`. Raises RefError naming what is wrong."""
    if not isinstance(value, str) or not value:
        raise RefError("a reference must be a non-empty string")
    text = value.split("#", 1)[0]  # `include_name` adds `#<name>`
    if is_uuid(text):
        if not is_uuid(text, kind):
            raise RefError(f"{value!r} is not a {kind} UUID")
        return Ref(kind, uuid=text)
    parsed = urllib.parse.urlsplit(text)
    if parsed.path.startswith("/api/") or "/api/" in parsed.path:
        path = parsed.path[parsed.path.index("/api/") + len("/api/"):].strip("/")
        parts = path.split("/")
        if parts[0] != kind:
            raise RefError(f"{value!r} refers to a {parts[0]}, expected a {kind}")
        if len(parts) == 2 and parts[1]:
            if not is_uuid(parts[1], kind):
                raise RefError(f"{value!r}: {parts[1]!r} is not a {kind} UUID")
            return Ref(kind, uuid=parts[1])
        if len(parts) == 1:
            query = urllib.parse.parse_qs(parsed.query)
            if "name" in query and query["name"][0]:
                return Ref(kind, name=query["name"][0])
            if "uuid" in query and query["uuid"][0]:
                return Ref(kind, uuid=query["uuid"][0])
        raise RefError(f"{value!r} is not a reference to a {kind}")
    if allow_bare_name and "/" not in text and "?" not in text:
        return Ref(kind, name=text)
    raise RefError(f"{value!r} is not a {kind} reference (use a URL, a UUID or /api/{kind}?name=...)")
