"""Where virtual services run: a pure function of desired state and SE state.

`place()` takes the SE groups, the SEs (with their health) and the virtual services, plus the
previous placement, and answers which SEs serve each virtual service (primary first), which
virtual services cannot be placed and why, how many SEs each group should add, and which SEs
are idle. It never talks to a cloud or a database, so every rule is unit-tested on its own.

Rules (Avi's elastic HA modes):
- `HA_MODE_SHARED` (N+M): a virtual service runs on `min_scaleout_per_vs` SEs; the group keeps
  `buffer_se` SEs' worth of spare capacity so that up to that many SE failures are absorbed.
- `HA_MODE_SHARED_PAIR` (active/active): at least two SEs per virtual service.
- `HA_MODE_LEGACY_ACTIVE_STANDBY`: exactly two SEs per group; every virtual service is active
  on one and standby on the other.
- `PLACEMENT_ALGO_PACKED` fills the busiest SE that has room; `PLACEMENT_ALGO_DISTRIBUTED`
  uses the least busy one and grows the group (up to `max_se`) before doubling up.
- A placement on a healthy SE is kept (flows keep their SE); only what must move moves.

`vip_holders()` applies the cloud's return path to a placement: which SEs hold the VIP.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping

from vantage.cloud.base import ReturnPath

SHARED = "HA_MODE_SHARED"
SHARED_PAIR = "HA_MODE_SHARED_PAIR"
ACTIVE_STANDBY = "HA_MODE_LEGACY_ACTIVE_STANDBY"
PACKED = "PLACEMENT_ALGO_PACKED"
DISTRIBUTED = "PLACEMENT_ALGO_DISTRIBUTED"


@dataclasses.dataclass(frozen=True)
class GroupSpec:
    uuid: str
    name: str
    ha_mode: str = SHARED
    algo: str = PACKED
    min_scaleout_per_vs: int = 1
    max_scaleout_per_vs: int = 4
    max_se: int = 10
    max_vs_per_se: int = 10
    buffer_se: int = 1


@dataclasses.dataclass(frozen=True)
class SeStatus:
    uuid: str
    group: str
    #: the SE can take traffic now (registered, heartbeating)
    healthy: bool
    #: the SE is being created and will be healthy soon: placeable, not yet serving
    pending: bool = False
    #: SE_STATE_ENABLED; False for DISABLED_FOR_PLACEMENT and the like
    placeable: bool = True


@dataclasses.dataclass(frozen=True)
class VsDemand:
    uuid: str
    name: str
    group: str
    #: SEs this virtual service asks for beyond the group minimum (scale-out), if any
    scaleout: int | None = None


@dataclasses.dataclass(frozen=True)
class VsPlacement:
    #: SEs that actively serve the virtual service, primary first
    active: tuple[str, ...]
    #: SE holding the virtual service in standby (active/standby groups)
    standby: str | None = None


@dataclasses.dataclass
class PlacementResult:
    placements: dict[str, VsPlacement]
    #: virtual service uuid -> reason it has no (or not enough) SEs
    unplaced: dict[str, str]
    #: group uuid -> number of SEs to create
    create: dict[str, int]
    #: SEs with nothing placed on them (candidates for deprovisioning)
    idle: list[str]


def _wanted(group: GroupSpec, demand: VsDemand) -> int:
    if group.ha_mode == ACTIVE_STANDBY:
        return 1
    base = max(group.min_scaleout_per_vs, 2 if group.ha_mode == SHARED_PAIR else 1)
    if demand.scaleout:
        base = max(base, demand.scaleout)
    return min(base, group.max_scaleout_per_vs)


def place(groups: Mapping[str, GroupSpec], ses: Iterable[SeStatus], demands: Iterable[VsDemand],
          previous: Mapping[str, VsPlacement] | None = None) -> PlacementResult:
    previous = previous or {}
    ses = list(ses)
    result = PlacementResult({}, {}, {}, [])
    by_group: dict[str, list[VsDemand]] = {}
    for demand in demands:
        by_group.setdefault(demand.group, []).append(demand)
    for group_uuid, group_demands in by_group.items():
        group = groups.get(group_uuid)
        if group is None:
            for demand in group_demands:
                result.unplaced[demand.uuid] = f"SE group {group_uuid} does not exist"
            continue
        members = [se for se in ses if se.group == group_uuid]
        if group.ha_mode == ACTIVE_STANDBY:
            _place_active_standby(group, members, group_demands, previous, result)
        else:
            _place_elastic(group, members, group_demands, previous, result)
    used = {se for p in result.placements.values() for se in (*p.active, p.standby) if se}
    result.idle = [se.uuid for se in ses if se.uuid not in used]
    return result


def _usable(se: SeStatus) -> bool:
    return se.placeable and (se.healthy or se.pending)


def _place_elastic(group: GroupSpec, members: list[SeStatus], demands: list[VsDemand],
                   previous: Mapping[str, VsPlacement], result: PlacementResult) -> None:
    usable = {se.uuid: se for se in members if _usable(se)}
    load: dict[str, int] = {uuid: 0 for uuid in usable}
    wanted = {d.uuid: _wanted(group, d) for d in demands}
    chosen: dict[str, list[str]] = {}
    # keep what already runs on usable SEs, primary first, within capacity
    for demand in sorted(demands, key=lambda d: d.name):
        keep = []
        for se in previous.get(demand.uuid, VsPlacement(())).active:
            if se in usable and load[se] < group.max_vs_per_se and len(keep) < wanted[demand.uuid]:
                keep.append(se)
                load[se] += 1
        chosen[demand.uuid] = keep
    # SEs the group should have: enough for every placement, plus the buffer (N+M)
    slots = sum(wanted.values())
    needed = max(math.ceil(slots / group.max_vs_per_se), max(wanted.values(), default=0))
    if group.ha_mode == SHARED:
        needed += group.buffer_se
    if group.algo == DISTRIBUTED:
        needed = max(needed, min(len(demands), group.max_se))
    target = min(needed, group.max_se)
    missing = max(0, target - len(usable))
    if missing:
        result.create[group.uuid] = missing
    # slots on the SEs about to be created: a virtual service that will fit there waits;
    # one that will not (max_se reached) lacks resources. Dead SEs are replaced, so they do
    # not count against max_se here.
    future_slots = missing * group.max_vs_per_se
    for demand in sorted(demands, key=lambda d: d.name):
        have = chosen[demand.uuid]
        while len(have) < wanted[demand.uuid]:
            candidates = [se for se in usable if se not in have and load[se] < group.max_vs_per_se]
            if not candidates:
                break
            if group.algo == DISTRIBUTED:
                pick = min(candidates, key=lambda se: (load[se], se))
            else:
                pick = max(candidates, key=lambda se: (load[se], _neg(se)))
            have.append(pick)
            load[pick] += 1
        if have:
            result.placements[demand.uuid] = VsPlacement(tuple(have))
        short = wanted[demand.uuid] - len(have)
        if short > 0:
            if short <= min(missing, future_slots):
                future_slots -= short
                reason = (f"waiting for {missing} new SE(s) in SE group '{group.name}'")
            else:
                reason = (f"SE group '{group.name}' has no capacity: {len(usable)} usable SE(s), "
                          f"max_se {group.max_se}, max_vs_per_se {group.max_vs_per_se}")
            result.unplaced[demand.uuid] = reason if not have else \
                f"{reason} (running on {len(have)} of {wanted[demand.uuid]} SEs)"


def _neg(uuid: str) -> tuple:
    # deterministic tie-break for max(): prefer the lexicographically smallest uuid
    return tuple(-ord(c) for c in uuid)


def _place_active_standby(group: GroupSpec, members: list[SeStatus], demands: list[VsDemand],
                          previous: Mapping[str, VsPlacement], result: PlacementResult) -> None:
    usable = sorted(se.uuid for se in members if _usable(se))
    healthy = {se.uuid for se in members if se.healthy}
    missing = max(0, min(2, group.max_se) - len(usable))
    if missing:
        result.create[group.uuid] = missing
    if not usable:
        for demand in demands:
            result.unplaced[demand.uuid] = (f"waiting for SEs in SE group '{group.name}'"
                                            if missing else
                                            f"SE group '{group.name}' has no usable SE")
        return
    pair = usable[:2]
    for index, demand in enumerate(sorted(demands, key=lambda d: d.name)):
        before = previous.get(demand.uuid)
        if before and before.active and before.active[0] in pair and before.active[0] in healthy:
            primary = before.active[0]
        elif before and before.standby in pair and before.standby in healthy:
            primary = before.standby  # failover: the standby takes the VIP
        else:
            healthy_pair = [se for se in pair if se in healthy] or pair
            primary = healthy_pair[index % len(healthy_pair)]
        standby = next((se for se in pair if se != primary), None)
        result.placements[demand.uuid] = VsPlacement((primary,), standby)
        if standby is None:
            result.unplaced[demand.uuid] = (f"SE group '{group.name}' has one SE: no standby "
                                            "for failover")


def return_path(cloud_return_path: ReturnPath | None, se_tunnel_mode: int = 0) -> ReturnPath:
    """The return path a virtual service uses: the SE group's `se_tunnel_mode` (1: tunnel to
    the primary, 2: direct secondary return, as Avi spells it) overrides the cloud's."""
    if se_tunnel_mode == 1:
        return ReturnPath.SYMMETRIC
    if se_tunnel_mode == 2:
        return ReturnPath.ASYMMETRIC
    return cloud_return_path or ReturnPath.ASYMMETRIC


def vip_holders(where: VsPlacement, path: ReturnPath) -> dict[str, bool]:
    """SE uuid -> primary flag of every SE that must hold the virtual service's VIPs.

    Asymmetric: the primary owns the VIP (answers ARP) and every secondary holds it without
    ARP, to answer the clients whose flows the primary hands it. Symmetric (OpenStack):
    only the primary holds the VIP; secondaries reach clients through the primary, since
    Neutron port security drops VIP-sourced frames from any other port. A standby holds
    nothing until it is promoted.
    """
    if not where.active:
        return {}
    if path == ReturnPath.SYMMETRIC:
        return {where.active[0]: True}
    return {se: index == 0 for index, se in enumerate(where.active)}
