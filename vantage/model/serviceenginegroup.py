"""Service Engine groups: how many SEs a cloud may run, their size, and the HA mode."""
from __future__ import annotations

from enum import Enum
from typing import Annotated, ClassVar

import pydantic
from pydantic import Field

from vantage.model.base import Struct, VantageObject


class HaMode(str, Enum):
    HA_MODE_SHARED = "HA_MODE_SHARED"
    """Elastic N+M: a VS on one SE, `buffer_se` spare SEs absorb failures."""
    HA_MODE_SHARED_PAIR = "HA_MODE_SHARED_PAIR"
    """Elastic active/active: every VS runs on at least two SEs."""
    HA_MODE_LEGACY_ACTIVE_STANDBY = "HA_MODE_LEGACY_ACTIVE_STANDBY"
    """Two SEs, one active, one standby; no scale-out."""


class PlacementAlgo(str, Enum):
    PLACEMENT_ALGO_PACKED = "PLACEMENT_ALGO_PACKED"
    PLACEMENT_ALGO_DISTRIBUTED = "PLACEMENT_ALGO_DISTRIBUTED"


class AutoRebalanceCriteria(str, Enum):
    SE_AUTO_REBALANCE_CPU = "SE_AUTO_REBALANCE_CPU"
    SE_AUTO_REBALANCE_PPS = "SE_AUTO_REBALANCE_PPS"
    SE_AUTO_REBALANCE_MBPS = "SE_AUTO_REBALANCE_MBPS"
    SE_AUTO_REBALANCE_OPEN_CONNS = "SE_AUTO_REBALANCE_OPEN_CONNS"
    SE_AUTO_REBALANCE_CPS = "SE_AUTO_REBALANCE_CPS"


class VcenterClusters(Struct):
    cluster_refs: list[str] = Field(default_factory=list)
    include: bool = True


class ServiceEngineGroup(VantageObject):
    kind: ClassVar[str] = "serviceenginegroup"
    ref_fields: ClassVar[dict[str, str]] = {"cloud_ref": "cloud", "mgmt_network_ref": "network"}

    cloud_ref: str | None = None
    ha_mode: HaMode = HaMode.HA_MODE_SHARED
    algo: PlacementAlgo = PlacementAlgo.PLACEMENT_ALGO_PACKED
    buffer_se: Annotated[int, Field(ge=0, le=100)] = 1
    min_scaleout_per_vs: Annotated[int, Field(ge=1, le=64)] = 1
    max_scaleout_per_vs: Annotated[int, Field(ge=1, le=64)] = 4
    max_se: Annotated[int, Field(ge=1, le=1000)] = 10
    max_vs_per_se: Annotated[int, Field(ge=1, le=1000)] = 10
    vcpus_per_se: Annotated[int, Field(ge=1, le=64)] = 1
    memory_per_se: Annotated[int, Field(ge=1024, le=1_048_576)] = 2048
    """MB of memory for each SE."""
    disk_per_se: Annotated[int, Field(ge=10, le=10_000)] = 15
    """GB of disk for each SE."""
    instance_flavor: str | None = None
    se_name_prefix: Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9-]+$")] = "vantage"
    mgmt_network_ref: str | None = None
    auto_rebalance: bool = False
    auto_rebalance_criteria: list[AutoRebalanceCriteria] = Field(default_factory=list)
    se_tunnel_mode: Annotated[int, Field(ge=0, le=2)] = 0
    """0: automatic for the cloud, 1: tunnel to the primary, 2: direct secondary return."""
    aggressive_failure_detection: bool = False
    dp_hb_frequency: Annotated[int, Field(ge=100, le=10_000)] = 1000
    """Milliseconds between SE heartbeats."""
    dp_hb_timeout_count: Annotated[int, Field(ge=1, le=60)] = 10
    se_deprovision_delay: Annotated[int, Field(ge=0, le=10_080)] = 120
    """Minutes an idle, controller-created SE is kept before it is deleted."""
    distribute_load_active_standby: bool = False
    vcenter_folder: str | None = None
    vcenter_clusters: VcenterClusters | None = None
    openstack_availability_zones: list[str] = Field(default_factory=list)

    @pydantic.model_validator(mode="after")
    def _scaleout_range(self) -> ServiceEngineGroup:
        if self.min_scaleout_per_vs > self.max_scaleout_per_vs:
            raise ValueError(f"min_scaleout_per_vs ({self.min_scaleout_per_vs}) must not exceed "
                             f"max_scaleout_per_vs ({self.max_scaleout_per_vs})")
        if self.ha_mode == HaMode.HA_MODE_SHARED_PAIR and self.min_scaleout_per_vs < 2:
            raise ValueError("min_scaleout_per_vs must be at least 2 with HA_MODE_SHARED_PAIR "
                             "(active/active runs every virtual service on two SEs)")
        if self.ha_mode == HaMode.HA_MODE_LEGACY_ACTIVE_STANDBY and self.max_se > 2:
            raise ValueError("max_se must be 1 or 2 with HA_MODE_LEGACY_ACTIVE_STANDBY")
        return self
