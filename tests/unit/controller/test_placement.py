"""placement.place: every HA mode, packed and distributed, the group limits, stability of what
runs on healthy SEs, failover, the reasons of what cannot be placed, and how many SEs to create."""
from __future__ import annotations

import random

import pytest

from vantage.cloud.base import ReturnPath
from vantage.controller import placement
from vantage.controller.placement import (
    ACTIVE_STANDBY,
    DISTRIBUTED,
    PACKED,
    SHARED,
    SHARED_PAIR,
    GroupSpec,
    SeStatus,
    VsDemand,
    VsPlacement,
    place,
)

G = "serviceenginegroup-g"


def group(**kw) -> dict[str, GroupSpec]:
    return {G: GroupSpec(uuid=G, name="grp", **kw)}


def healthy(*uuids: str, group_uuid: str = G) -> list[SeStatus]:
    return [SeStatus(u, group_uuid, healthy=True) for u in uuids]


def vss(*names: str, group_uuid: str = G) -> list[VsDemand]:
    return [VsDemand(f"vs-{n}", n, group_uuid) for n in names]


def active(result, vs: str) -> tuple[str, ...]:
    return result.placements[f"vs-{vs}"].active


# -- N+M (HA_MODE_SHARED) ----------------------------------------------------------------------

def test_an_empty_group_creates_the_vs_se_and_the_buffer_se():
    result = place(group(), [], vss("a"))
    assert result.create == {G: 2}  # one for the VS, buffer_se 1
    assert result.placements == {}
    assert result.unplaced["vs-a"] == "waiting for 2 new SE(s) in SE group 'grp'"
    assert result.idle == []


@pytest.mark.parametrize("buffer_se,created", [(0, 1), (1, 2), (3, 4)])
def test_buffer_se_adds_spare_ses(buffer_se, created):
    assert place(group(buffer_se=buffer_se), [], vss("a")).create == {G: created}


def test_pending_ses_take_placements_before_they_are_healthy():
    ses = [SeStatus("se-1", G, healthy=False, pending=True),
           SeStatus("se-2", G, healthy=False, pending=True)]
    result = place(group(), ses, vss("a"))
    assert active(result, "a") == ("se-1",)
    assert result.create == {} and result.unplaced == {}
    assert result.idle == ["se-2"]  # the buffer


def test_packed_fills_the_busiest_se_that_has_room():
    result = place(group(max_vs_per_se=2), healthy("se-1", "se-2", "se-3"), vss("a", "b", "c"))
    assert active(result, "a") == active(result, "b") == ("se-1",)
    assert active(result, "c") == ("se-2",)
    assert result.idle == ["se-3"]
    assert result.create == {}


def test_packed_prefers_the_se_that_already_carries_load():
    previous = {"vs-a": VsPlacement(("se-2",))}
    result = place(group(), healthy("se-1", "se-2"), vss("a", "b"), previous)
    assert active(result, "a") == active(result, "b") == ("se-2",)


def test_distributed_spreads_and_grows_the_group_up_to_max_se():
    result = place(group(algo=DISTRIBUTED), healthy("se-1", "se-2", "se-3"), vss("a", "b", "c"))
    assert sorted(active(result, v)[0] for v in "abc") == ["se-1", "se-2", "se-3"]
    # one SE per virtual service while max_se allows
    grow = place(group(algo=DISTRIBUTED, buffer_se=0), healthy("se-1"), vss("a", "b", "c"))
    assert grow.create == {G: 2}
    capped = place(group(algo=DISTRIBUTED, buffer_se=0, max_se=2), healthy("se-1"),
                   vss("a", "b", "c"))
    assert capped.create == {G: 1}
    # with the SEs it has, it doubles up rather than leave a virtual service out
    assert set(capped.placements) == {"vs-a", "vs-b", "vs-c"}


def test_distributed_doubles_up_on_the_least_busy_se():
    previous = {"vs-a": VsPlacement(("se-1",)), "vs-b": VsPlacement(("se-1",))}
    result = place(group(algo=DISTRIBUTED, max_se=2), healthy("se-1", "se-2"),
                   vss("a", "b", "c"), previous)
    assert active(result, "c") == ("se-2",)


def test_max_vs_per_se_and_max_se_refuse_with_resources_reason():
    spec = group(max_se=1, buffer_se=0, max_vs_per_se=1)
    result = place(spec, healthy("se-1"), vss("a", "b"))
    assert active(result, "a") == ("se-1",)
    assert "vs-b" not in result.placements
    assert result.unplaced["vs-b"] == ("SE group 'grp' has no capacity: 1 usable SE(s), "
                                       "max_se 1, max_vs_per_se 1")
    assert result.create == {}  # never more than max_se


def test_only_what_fits_on_the_ses_being_created_waits_for_them():
    result = place(group(max_se=1, buffer_se=0, max_vs_per_se=1), [], vss("a", "b"))
    assert result.create == {G: 1}
    assert result.unplaced["vs-a"] == "waiting for 1 new SE(s) in SE group 'grp'"
    assert result.unplaced["vs-b"] == ("SE group 'grp' has no capacity: 0 usable SE(s), "
                                       "max_se 1, max_vs_per_se 1")


def test_max_se_caps_creation():
    result = place(group(max_se=3, max_vs_per_se=1, buffer_se=1), [], vss("a", "b", "c", "d"))
    assert result.create == {G: 3}


def test_create_counts_only_what_is_missing():
    spec = group(max_vs_per_se=2, buffer_se=1)
    assert place(spec, healthy("se-1"), vss("a", "b", "c")).create == {G: 2}
    assert place(spec, healthy("se-1", "se-2"), vss("a", "b", "c")).create == {G: 1}
    assert place(spec, healthy("se-1", "se-2", "se-3"), vss("a", "b", "c")).create == {}
    # SEs being created count as capacity: no second order for the same SEs
    pending = [SeStatus("se-4", G, healthy=False, pending=True)]
    assert place(spec, healthy("se-1", "se-2") + pending, vss("a", "b", "c")).create == {}


def test_a_placement_on_a_healthy_se_is_kept():
    previous = {"vs-a": VsPlacement(("se-2",))}
    for _ in range(3):
        result = place(group(), healthy("se-1", "se-2"), vss("a"), previous)
        assert active(result, "a") == ("se-2",)
        previous = result.placements


def test_failover_moves_to_the_buffer_and_does_not_move_back():
    ses = healthy("se-1", "se-2")
    first = place(group(), ses, vss("a"))
    assert active(first, "a") == ("se-1",)
    down = [SeStatus("se-1", G, healthy=False), SeStatus("se-2", G, healthy=True)]
    moved = place(group(), down, vss("a"), first.placements)
    assert active(moved, "a") == ("se-2",)
    assert moved.idle == ["se-1"]
    assert moved.create == {G: 1}  # a new buffer: the dead SE is not capacity
    back = place(group(), ses, vss("a"), moved.placements)
    assert active(back, "a") == ("se-2",)


def test_a_group_whose_ses_are_all_down_waits_for_replacements():
    down = [SeStatus("se-1", G, healthy=False), SeStatus("se-2", G, healthy=False)]
    result = place(group(max_se=2), down, vss("a"), {"vs-a": VsPlacement(("se-1",))})
    assert result.create == {G: 2}
    # the controller replaces dead SEs; this is no lack of resources
    assert result.unplaced["vs-a"] == "waiting for 2 new SE(s) in SE group 'grp'"


def test_unhealthy_and_unplaceable_ses_are_not_used():
    ses = [SeStatus("se-1", G, healthy=False), SeStatus("se-2", G, healthy=True, placeable=False),
           SeStatus("se-3", G, healthy=True)]
    result = place(group(), ses, vss("a"))
    assert active(result, "a") == ("se-3",)


def test_kept_placements_respect_a_lowered_max_vs_per_se():
    previous = {f"vs-{n}": VsPlacement(("se-1",)) for n in "abc"}
    result = place(group(max_vs_per_se=2), healthy("se-1", "se-2"), vss("a", "b", "c"), previous)
    assert active(result, "a") == active(result, "b") == ("se-1",)
    assert active(result, "c") == ("se-2",)


def test_min_scaleout_per_vs_within_max_scaleout():
    result = place(group(min_scaleout_per_vs=3, max_scaleout_per_vs=4),
                   healthy("se-1", "se-2", "se-3", "se-4"), vss("a"))
    assert active(result, "a") == ("se-1", "se-2", "se-3")
    capped = place(group(min_scaleout_per_vs=3, max_scaleout_per_vs=2),
                   healthy("se-1", "se-2", "se-3"), vss("a"))
    assert len(active(capped, "a")) == 2
    asked = place(group(), healthy("se-1", "se-2", "se-3"),
                  [VsDemand("vs-a", "a", G, scaleout=2)])
    assert len(active(asked, "a")) == 2


# -- active/active (HA_MODE_SHARED_PAIR) -----------------------------------------------------

def test_shared_pair_runs_every_vs_on_two_ses():
    spec = group(ha_mode=SHARED_PAIR, min_scaleout_per_vs=2)
    result = place(spec, healthy("se-1", "se-2", "se-3"), vss("a", "b"))
    assert active(result, "a") == active(result, "b") == ("se-1", "se-2")
    assert result.create == {}  # no N+M buffer in this mode
    assert result.idle == ["se-3"]


def test_shared_pair_with_one_se_runs_partitioned_and_asks_for_another():
    spec = group(ha_mode=SHARED_PAIR, min_scaleout_per_vs=2)
    result = place(spec, healthy("se-1"), vss("a"))
    assert active(result, "a") == ("se-1",)
    assert result.create == {G: 1}
    assert result.unplaced["vs-a"] == ("waiting for 1 new SE(s) in SE group 'grp' "
                                       "(running on 1 of 2 SEs)")
    full = place(group(ha_mode=SHARED_PAIR, min_scaleout_per_vs=2, max_se=1), healthy("se-1"),
                 vss("a"))
    assert full.unplaced["vs-a"].startswith("SE group 'grp' has no capacity")
    assert full.unplaced["vs-a"].endswith("(running on 1 of 2 SEs)")


def test_shared_pair_failover_keeps_the_survivor_and_adds_a_new_se():
    spec = group(ha_mode=SHARED_PAIR, min_scaleout_per_vs=2)
    first = place(spec, healthy("se-1", "se-2", "se-3"), vss("a"))
    ses = [SeStatus("se-1", G, healthy=False), *healthy("se-2", "se-3")]
    moved = place(spec, ses, vss("a"), first.placements)
    assert active(moved, "a") == ("se-2", "se-3")


# -- active/standby (HA_MODE_LEGACY_ACTIVE_STANDBY) ----------------------------------------

def test_active_standby_needs_two_ses():
    spec = group(ha_mode=ACTIVE_STANDBY, max_se=2)
    empty = place(spec, [], vss("a"))
    assert empty.create == {G: 2}
    assert empty.unplaced["vs-a"] == "waiting for SEs in SE group 'grp'"
    one = place(spec, healthy("se-1"), vss("a"))
    assert one.placements["vs-a"] == VsPlacement(("se-1",), None)
    assert one.unplaced["vs-a"] == "SE group 'grp' has one SE: no standby for failover"
    assert one.create == {G: 1}
    single = place(group(ha_mode=ACTIVE_STANDBY, max_se=1), healthy("se-1"), vss("a"))
    assert single.create == {}


def test_active_standby_places_active_and_standby_on_the_pair():
    spec = group(ha_mode=ACTIVE_STANDBY, max_se=2)
    result = place(spec, healthy("se-1", "se-2"), vss("a", "b"))
    for vs in ("vs-a", "vs-b"):
        where = result.placements[vs]
        assert {where.active[0], where.standby} == {"se-1", "se-2"}
    assert result.unplaced == {} and result.create == {} and result.idle == []


def test_active_standby_failover_to_the_standby_without_flapping_back():
    spec = group(ha_mode=ACTIVE_STANDBY, max_se=2)
    first = place(spec, healthy("se-1", "se-2"), vss("a"))
    assert first.placements["vs-a"] == VsPlacement(("se-1",), "se-2")
    ses = [SeStatus("se-1", G, healthy=False), SeStatus("se-2", G, healthy=True)]
    failed = place(spec, ses, vss("a"), first.placements)
    # the dead SE is no standby; a replacement is asked for
    assert failed.placements["vs-a"] == VsPlacement(("se-2",), None)
    assert failed.create == {G: 1}
    back = place(spec, healthy("se-1", "se-2"), vss("a"), failed.placements)
    assert back.placements["vs-a"] == VsPlacement(("se-2",), "se-1")
    # the standby takes over from a primary that only just failed (placement still current)
    again = place(spec, [SeStatus("se-1", G, healthy=True), SeStatus("se-2", G, healthy=False,
                                                                     pending=True)],
                  vss("a"), back.placements)
    assert again.placements["vs-a"] == VsPlacement(("se-1",), "se-2")


def test_active_standby_with_no_usable_se_and_no_room():
    spec = group(ha_mode=ACTIVE_STANDBY, max_se=2)
    # both SEs down: the controller replaces them, the VS waits
    ses = [SeStatus("se-1", G, healthy=False), SeStatus("se-2", G, healthy=False)]
    result = place(spec, ses, vss("a"))
    assert result.create == {G: 2}
    assert result.unplaced["vs-a"] == "waiting for SEs in SE group 'grp'"


# -- all modes --------------------------------------------------------------------------------

def test_a_missing_group_is_named():
    result = place({}, [], [VsDemand("vs-a", "a", "serviceenginegroup-gone")])
    assert result.unplaced == {"vs-a": "SE group serviceenginegroup-gone does not exist"}
    assert result.create == {}


def test_groups_are_placed_independently_and_idle_ses_are_listed():
    other = "serviceenginegroup-h"
    groups = {G: GroupSpec(uuid=G, name="grp"), other: GroupSpec(uuid=other, name="h")}
    ses = healthy("se-1") + healthy("se-9", group_uuid=other)
    result = place(groups, ses, vss("a"))
    assert active(result, "a") == ("se-1",)
    assert result.idle == ["se-9"]  # no demand in its group
    assert result.create == {G: 1}


@pytest.mark.parametrize("ha_mode,algo", [(SHARED, PACKED), (SHARED, DISTRIBUTED),
                                          (SHARED_PAIR, PACKED), (ACTIVE_STANDBY, PACKED)])
def test_the_answer_does_not_depend_on_input_order(ha_mode, algo):
    kw = {"ha_mode": ha_mode, "algo": algo, "max_vs_per_se": 2}
    if ha_mode == SHARED_PAIR:
        kw["min_scaleout_per_vs"] = 2
    if ha_mode == ACTIVE_STANDBY:
        kw["max_se"] = 2
    ses = healthy("se-1", "se-2", "se-3")[:2 if ha_mode == ACTIVE_STANDBY else 3]
    demands = vss("a", "b", "c", "d")
    expected = place(group(**kw), ses, demands)
    rng = random.Random(7)
    for _ in range(5):
        rng.shuffle(ses)
        rng.shuffle(demands)
        again = place(group(**kw), ses, demands)
        assert again.placements == expected.placements
        assert again.unplaced == expected.unplaced and again.create == expected.create
        assert sorted(again.idle) == sorted(expected.idle)


def test_module_names_the_modes_as_avi_spells_them():
    assert (placement.SHARED, placement.SHARED_PAIR, placement.ACTIVE_STANDBY) == (
        "HA_MODE_SHARED", "HA_MODE_SHARED_PAIR", "HA_MODE_LEGACY_ACTIVE_STANDBY")
    assert (placement.PACKED, placement.DISTRIBUTED) == (
        "PLACEMENT_ALGO_PACKED", "PLACEMENT_ALGO_DISTRIBUTED")


# -- return paths: which SEs hold the VIP --------------------------------------------------------

def test_asymmetric_clouds_plumb_every_active_se_and_only_the_primary_answers_arp():
    where = VsPlacement(("se-1", "se-2", "se-3"))
    assert placement.vip_holders(where, ReturnPath.ASYMMETRIC) == {
        "se-1": True, "se-2": False, "se-3": False}


def test_symmetric_clouds_plumb_only_the_primary():
    where = VsPlacement(("se-1", "se-2"))
    assert placement.vip_holders(where, ReturnPath.SYMMETRIC) == {"se-1": True}


@pytest.mark.parametrize("path", list(ReturnPath))
def test_a_standby_holds_no_vip_until_promoted(path):
    assert placement.vip_holders(VsPlacement(("se-1",), "se-2"), path) == {"se-1": True}
    assert placement.vip_holders(VsPlacement(()), path) == {}


@pytest.mark.parametrize(("cloud", "mode", "expected"), [
    (ReturnPath.SYMMETRIC, 0, ReturnPath.SYMMETRIC),
    (ReturnPath.ASYMMETRIC, 0, ReturnPath.ASYMMETRIC),
    (None, 0, ReturnPath.ASYMMETRIC),
    (ReturnPath.ASYMMETRIC, 1, ReturnPath.SYMMETRIC),
    (ReturnPath.SYMMETRIC, 2, ReturnPath.ASYMMETRIC)])
def test_se_tunnel_mode_overrides_the_clouds_return_path(cloud, mode, expected):
    assert placement.return_path(cloud, mode) == expected
