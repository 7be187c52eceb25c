"""Pool groups: several pools behind one virtual service, by ratio and priority."""
from __future__ import annotations

from enum import Enum
from typing import Annotated, ClassVar

from pydantic import Field

from vantage.model.base import Struct, VantageObject


class PoolGroupDeploymentState(str, Enum):
    EVALUATION_IN_PROGRESS = "EVALUATION_IN_PROGRESS"
    IN_SERVICE = "IN_SERVICE"
    OUT_OF_SERVICE = "OUT_OF_SERVICE"


class PoolGroupMember(Struct):
    pool_ref: str
    ratio: Annotated[int, Field(ge=0, le=1000)] = 1
    priority_label: str | None = None
    deployment_state: PoolGroupDeploymentState | None = None


class PoolGroup(VantageObject):
    kind: ClassVar[str] = "poolgroup"
    ref_fields: ClassVar[dict[str, str]] = {"cloud_ref": "cloud"}
    nested_ref_fields: ClassVar[dict[str, str]] = {"members[].pool_ref": "pool"}

    members: list[PoolGroupMember] = Field(default_factory=list)
    min_servers: Annotated[int, Field(ge=0, le=65535)] = 0
    implicit_priority_labels: bool = False
    cloud_ref: str | None = None
