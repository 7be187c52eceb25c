"""Base of every configuration object: strict pydantic models with Avi field names.

Unknown fields are rejected (never silently dropped) and every validation error carries the
path of the field that caused it, so the API and the SE config loader can name it.
"""
from __future__ import annotations

from typing import Annotated, Any, ClassVar

import pydantic
from pydantic import ConfigDict, Field


class Struct(pydantic.BaseModel):
    """A nested object of the model (no identity of its own)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False, frozen=False,
                              use_enum_values=True, populate_by_name=True,
                              validate_default=True)


class VantageObject(Struct):
    """A top-level object kind (`pool`, `virtualservice`, ...)."""

    #: the kind as it appears in URLs (`/api/<kind>`) and in UUID prefixes
    kind: ClassVar[str]
    #: field name -> kind, for every field holding a reference (or a list of them)
    ref_fields: ClassVar[dict[str, str]] = {}

    uuid: str | None = None
    name: Annotated[str, Field(min_length=1, max_length=256)]
    url: str | None = None
    tenant_ref: str | None = None
    description: str | None = None
    last_modified: str | None = Field(default=None, alias="_last_modified")


Port = Annotated[int, Field(ge=1, le=65535)]
PortOrZero = Annotated[int, Field(ge=0, le=65535)]


class IpAddr(Struct):
    addr: str
    type: str = "V4"

    @pydantic.field_validator("addr")
    @classmethod
    def _valid_ip(cls, value: str) -> str:
        import ipaddress
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address") from None
        return value

    @pydantic.model_validator(mode="after")
    def _type_matches(self) -> IpAddr:
        import ipaddress
        version = ipaddress.ip_address(self.addr).version
        self.type = "V4" if version == 4 else "V6"
        return self


def error_path(loc: tuple[Any, ...]) -> str:
    """Render a pydantic error location as a field path: `servers[1].port`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def describe_errors(exc: pydantic.ValidationError, prefix: str = "") -> list[str]:
    """One readable line per validation error, each starting with the field path."""
    lines = []
    for err in exc.errors():
        path = error_path(tuple(err["loc"]))
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        lines.append(f"{path}: {msg}")
    return lines
