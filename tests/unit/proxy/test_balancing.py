"""Tests for vantage.proxy.balancing: every algorithm's choice, weights, exclusion and Maglev."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter

import pytest

from vantage.model.enums import LbAlgorithm
from vantage.proxy.backend import Server
from vantage.proxy.balancing import (
    Balancer,
    ConsistentHashBalancer,
    FastestResponseBalancer,
    LeastConnectionsBalancer,
    RandomBalancer,
    RoundRobinBalancer,
    make_balancer,
    smooth_weighted_schedule,
)

ALGORITHMS = [algorithm.value for algorithm in LbAlgorithm]
KEYS = [f"198.51.{i // 250}.{i % 250}:{40000 + i}".encode() for i in range(10_000)]


def make_servers(*ratios: int, pool: str = "web") -> list[Server]:
    return [Server(pool, f"10.0.0.{i + 1}", 8080, ratio=ratio) for i, ratio in enumerate(ratios)]


def pick_many(balancer: Balancer, count: int, **kwargs) -> list[Server]:
    return [balancer.pick(**kwargs) for _ in range(count)]


def mapping(balancer: Balancer, keys=KEYS) -> list[Server]:
    return [balancer.pick(key) for key in keys]


# --- factory and validation -------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_make_balancer_covers_every_avi_algorithm(algorithm):
    balancer = make_balancer(algorithm, make_servers(1, 1))
    assert balancer.algorithm == algorithm
    assert balancer.pick(b"key") is not None


def test_make_balancer_accepts_enum_members():
    balancer = make_balancer(LbAlgorithm.LB_ALGORITHM_CONSISTENT_HASH, make_servers(1))
    assert isinstance(balancer, ConsistentHashBalancer)


@pytest.mark.parametrize("algorithm", ["LB_ALGORITHM_WEIGHTED_MAGIC", "round_robin", "", None, 3])
def test_unknown_algorithm_is_named_in_the_error(algorithm):
    with pytest.raises(ValueError, match="lb_algorithm") as error:
        make_balancer(algorithm, make_servers(1))
    assert repr(algorithm) in str(error.value)
    assert "LB_ALGORITHM_ROUND_ROBIN" in str(error.value)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("ratio", [0, -1, 1.5, "2", True])
def test_invalid_ratio_names_server_and_field(algorithm, ratio):
    servers = make_servers(1, 1)
    servers[1].ratio = ratio
    with pytest.raises(ValueError, match=r"pool 'web' server 10\.0\.0\.2:8080: ratio must be"):
        make_balancer(algorithm, servers)


def test_table_size_must_be_prime():
    with pytest.raises(ValueError, match="table_size must be a prime number.*16380"):
        ConsistentHashBalancer(make_servers(1), table_size=16380)
    assert ConsistentHashBalancer(make_servers(1), table_size=251).table_size == 251


def test_random_rejects_a_non_random_rng():
    with pytest.raises(TypeError, match="rng must be a random.Random or an int seed"):
        RandomBalancer(make_servers(1), rng="seed")


# --- behaviour shared by every algorithm -------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_no_servers_gives_none(algorithm):
    balancer = make_balancer(algorithm, [])
    assert balancer.pick() is None
    assert balancer.pick(b"key") is None
    assert balancer.pick(b"key", exclude=[object()]) is None


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_none_available_gives_none(algorithm):
    servers = make_servers(1, 2, 3)
    servers[0].enabled = False
    servers[1].up = False
    servers[2].draining = True
    balancer = make_balancer(algorithm, servers)
    assert balancer.pick() is None
    assert balancer.pick(b"key") is None


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_disabled_down_and_draining_servers_get_no_new_flows(algorithm):
    servers = make_servers(5, 5, 5, 1)
    servers[0].enabled = False
    servers[1].up = False
    servers[2].draining = True
    balancer = make_balancer(algorithm, servers, rng=3)
    picks = pick_many(balancer, 200) + mapping(balancer, KEYS[:500])
    assert set(picks) == {servers[3]}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_state_change_without_refresh_still_keeps_unavailable_servers_out(algorithm):
    servers = make_servers(1, 1, 1)
    balancer = make_balancer(algorithm, servers, rng=3)
    servers[0].up = False
    servers[1].draining = True
    picks = pick_many(balancer, 50) + mapping(balancer, KEYS[:500])
    assert set(picks) == {servers[2]}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_server_coming_back_is_used_after_refresh(algorithm):
    servers = make_servers(1, 1)
    servers[1].up = False
    balancer = make_balancer(algorithm, servers, rng=3)
    assert set(pick_many(balancer, 20) + mapping(balancer, KEYS[:200])) == {servers[0]}
    servers[1].up = True
    balancer.refresh()
    assert set(pick_many(balancer, 20) + mapping(balancer, KEYS[:200])) == set(servers)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("hash_key", [None, b"client-1"])
def test_exclude_is_never_chosen(algorithm, hash_key):
    servers = make_servers(3, 1, 1, 2)
    balancer = make_balancer(algorithm, servers, rng=5)
    exclude = {servers[0], servers[3]}
    picks = [balancer.pick(hash_key, exclude) for _ in range(100)]
    assert None not in picks
    assert not exclude & set(picks)
    # Excluding a list works too; the retry path still covers every other server over time.
    picks = [balancer.pick(key, [servers[1]]) for key in KEYS[:300]]
    assert set(picks) == {servers[0], servers[2], servers[3]}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("hash_key", [None, b"client-1"])
def test_excluding_every_available_server_gives_none(algorithm, hash_key):
    servers = make_servers(1, 2, 1)
    servers[2].enabled = False
    balancer = make_balancer(algorithm, servers)
    assert balancer.pick(hash_key, exclude=servers[:2]) is None
    assert balancer.pick(hash_key, exclude=(servers[0],)) is servers[1]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_servers_added_to_the_pool_list_join_after_refresh(algorithm):
    servers = make_servers(1)
    balancer = make_balancer(algorithm, servers, rng=1)
    servers.append(Server("web", "10.0.0.9", 8080))
    balancer.refresh()
    picks = pick_many(balancer, 40) + mapping(balancer, KEYS[:200])
    assert set(picks) == set(servers)


# --- round robin -------------------------------------------------------------------------------


def test_smooth_schedule_matches_nginx_reference_sequence():
    # nginx's ngx_http_upstream_get_peer: weights {5, 1, 1} give a a b a c a a.
    assert smooth_weighted_schedule([5, 1, 1]) == [0, 0, 1, 0, 2, 0, 0]


def test_round_robin_one_to_three_is_exact_and_interleaved():
    light, heavy = make_servers(1, 3)
    balancer = RoundRobinBalancer([light, heavy])
    picks = pick_many(balancer, 4000)
    assert Counter(picks) == {light: 1000, heavy: 3000}
    longest = run = 0
    for server in picks:
        run = run + 1 if server is heavy else 0
        longest = max(longest, run)
    assert longest <= 3
    assert all(picks[i:i + 4].count(light) == 1 for i in range(0, 4000, 4))


def test_round_robin_spreads_each_period_in_proportion():
    servers = make_servers(2, 3, 7, 1)
    balancer = RoundRobinBalancer(servers)
    for _ in range(5):
        period = pick_many(balancer, 13)
        assert [period.count(server) for server in servers] == [2, 3, 7, 1]
    # The heavy server never runs longer than its ratio allows when smoothly spread.
    picks = pick_many(balancer, 1300)
    assert max(len(run) for run in "".join(
        "x" if s is servers[2] else "." for s in picks).split(".")) <= 3


def test_round_robin_equal_ratios_rotate():
    servers = make_servers(4, 4, 4)
    picks = pick_many(RoundRobinBalancer(servers), 9)
    assert picks == servers * 3


def test_round_robin_honours_ratio_change_after_refresh():
    servers = make_servers(1, 1)
    balancer = RoundRobinBalancer(servers)
    assert Counter(pick_many(balancer, 100)) == {servers[0]: 50, servers[1]: 50}
    servers[1].ratio = 4
    balancer.refresh()
    assert Counter(pick_many(balancer, 100)) == {servers[0]: 20, servers[1]: 80}


class _SteppingRoundRobin(RoundRobinBalancer):
    SCHEDULE_BUILD_LIMIT = 0


def test_round_robin_without_precomputed_schedule_makes_the_same_choices():
    servers = make_servers(*[(i * 7) % 20 + 1 for i in range(40)])
    precomputed = RoundRobinBalancer(servers)
    stepping = _SteppingRoundRobin(servers)
    total = sum(server.ratio for server in servers)
    assert pick_many(stepping, 2 * total + 17) == pick_many(precomputed, 2 * total + 17)
    exclude = set(servers[::2])
    picks = [stepping.pick(None, exclude) for _ in range(200)]
    assert not exclude & set(picks) and None not in picks


# --- least connections -------------------------------------------------------------------------


def test_least_connections_picks_fewest_active():
    servers = make_servers(1, 1, 1)
    for server, active in zip(servers, (5, 2, 7)):
        server.active_conns = active
    assert LeastConnectionsBalancer(servers).pick() is servers[1]


def test_least_connections_compares_active_relative_to_ratio():
    light, heavy = make_servers(1, 4)
    light.active_conns = 2   # 2 per unit of ratio
    heavy.active_conns = 7   # 1.75 per unit of ratio
    balancer = LeastConnectionsBalancer([light, heavy])
    assert balancer.pick() is heavy
    heavy.active_conns = 9   # 2.25
    assert balancer.pick() is light


def test_least_connections_ties_take_turns():
    servers = make_servers(1, 1, 1, 1)
    for server in servers:
        server.active_conns = 3
    balancer = LeastConnectionsBalancer(servers)
    assert pick_many(balancer, 8) == servers * 2


def test_least_connections_with_long_flows_fills_in_ratio():
    servers = make_servers(1, 3, 2)
    balancer = LeastConnectionsBalancer(servers)
    for _ in range(600):
        balancer.pick().active_conns += 1
    assert [server.active_conns for server in servers] == [100, 300, 200]


def test_least_connections_exclude_takes_next_least():
    servers = make_servers(1, 1, 1)
    for server, active in zip(servers, (1, 2, 3)):
        server.active_conns = active
    balancer = LeastConnectionsBalancer(servers)
    assert balancer.pick(exclude={servers[0]}) is servers[1]
    assert balancer.pick(exclude=[servers[0], servers[1]]) is servers[2]


# --- fastest response --------------------------------------------------------------------------


def test_fastest_response_picks_lowest_average():
    servers = make_servers(1, 1, 1)
    for server, seconds in zip(servers, (0.030, 0.004, 0.011)):
        server.ewma_response_time = seconds
    balancer = FastestResponseBalancer(servers)
    assert balancer.pick() is servers[1]
    servers[1].record_response_time(0.5)
    assert balancer.pick() is servers[2]


def test_fastest_response_tries_unmeasured_servers_first():
    servers = make_servers(1, 1, 1)
    servers[0].ewma_response_time = 0.001
    servers[1].ewma_response_time = 0.002
    balancer = FastestResponseBalancer(servers)
    fresh = balancer.pick()
    assert fresh is servers[2]
    fresh.active_conns += 1
    # Its trial flow is in flight and unanswered: the measured servers go first meanwhile.
    assert balancer.pick() is servers[0]


def test_fastest_response_ties_go_to_fewer_active_then_rotate():
    servers = make_servers(1, 1, 1)
    for server, active in zip(servers, (4, 1, 2)):
        server.ewma_response_time = 0.010
        server.active_conns = active
    balancer = FastestResponseBalancer(servers)
    assert balancer.pick() is servers[1]
    servers[1].active_conns = 4
    servers[2].active_conns = 4
    assert pick_many(balancer, 6) == [servers[2], servers[0], servers[1]] * 2


def test_fastest_response_all_unmeasured_spread_by_active_connections():
    servers = make_servers(1, 1, 1)
    balancer = FastestResponseBalancer(servers)
    for _ in range(30):
        balancer.pick().active_conns += 1
    assert [server.active_conns for server in servers] == [10, 10, 10]


def test_fastest_response_exclude_takes_next_fastest():
    servers = make_servers(1, 1, 1)
    for server, seconds in zip(servers, (0.003, 0.001, 0.002)):
        server.ewma_response_time = seconds
    balancer = FastestResponseBalancer(servers)
    assert balancer.pick(exclude=(servers[1],)) is servers[2]


# --- random ------------------------------------------------------------------------------------


def test_random_follows_ratios_with_fixed_seed():
    servers = make_servers(1, 3, 6)
    balancer = make_balancer("LB_ALGORITHM_RANDOM", servers, rng=42)
    counts = Counter(pick_many(balancer, 20_000))
    for server, expected in zip(servers, (0.1, 0.3, 0.6)):
        assert counts[server] / 20_000 == pytest.approx(expected, abs=0.015)


def test_random_is_reproducible_with_the_same_seed():
    servers = make_servers(1, 2, 3)
    first = pick_many(RandomBalancer(servers, rng=7), 300)
    second = pick_many(RandomBalancer(servers, rng=random.Random(7)), 300)
    assert first == second
    assert set(first) == set(servers)


def test_random_exclude_keeps_ratios_among_the_rest():
    servers = make_servers(5, 1, 3)
    balancer = RandomBalancer(servers, rng=11)
    counts = Counter(balancer.pick(exclude=[servers[0]]) for _ in range(8000))
    assert set(counts) == {servers[1], servers[2]}
    assert counts[servers[2]] / 8000 == pytest.approx(0.75, abs=0.02)


# --- consistent hash (Maglev) ------------------------------------------------------------------


def test_maglev_same_keys_same_servers_across_instances_and_list_order():
    servers = make_servers(*[1 + i % 3 for i in range(12)])
    first = mapping(ConsistentHashBalancer(servers))
    second = mapping(ConsistentHashBalancer(list(servers)))
    shuffled = list(servers)
    random.Random(1).shuffle(shuffled)
    third = mapping(ConsistentHashBalancer(shuffled))
    assert first == second == third
    # Two pools holding equal servers (separate objects) also agree, server by server.
    twins = make_servers(*[1 + i % 3 for i in range(12)], pool="other")
    assert [s.key for s in mapping(ConsistentHashBalancer(twins))] == [s.key for s in first]


def test_maglev_mapping_is_stable_across_processes():
    servers = make_servers(*[1 + i % 4 for i in range(10)])
    here = [server.key for server in mapping(ConsistentHashBalancer(servers), KEYS[:2000])]
    script = (
        "import json\n"
        "from vantage.proxy.backend import Server\n"
        "from vantage.proxy.balancing import ConsistentHashBalancer\n"
        "servers = [Server('web', f'10.0.0.{i + 1}', 8080, ratio=1 + i % 4) for i in range(10)]\n"
        "balancer = ConsistentHashBalancer(servers)\n"
        "keys = [f'198.51.{i // 250}.{i % 250}:{40000 + i}'.encode() for i in range(2000)]\n"
        "print(json.dumps([balancer.pick(key).key for key in keys]))\n"
    )
    for seed in ("1", "4242"):
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONHASHSEED": seed}, check=True)
        assert json.loads(result.stdout) == here


def test_maglev_removal_moves_only_the_removed_servers_keys():
    servers = make_servers(*[1] * 16)
    balancer = ConsistentHashBalancer(servers)
    before = mapping(balancer)
    gone = servers[5]
    gone.up = False
    balancer.refresh()
    after = mapping(balancer)
    assert gone not in after
    unaffected = [(b, a) for b, a in zip(before, after) if b is not gone]
    kept = sum(b is a for b, a in unaffected) / len(unaffected)
    assert kept >= 0.98, f"only {kept:.2%} of keys of remaining servers stayed"
    # The orphaned keys spread over all the others instead of piling onto a neighbour.
    moved_to = Counter(a for b, a in zip(before, after) if b is gone)
    assert len(moved_to) >= 10


def test_maglev_addition_moves_keys_mostly_to_the_new_server():
    servers = make_servers(*[1] * 16)
    new = servers[-1]
    new.enabled = False
    balancer = ConsistentHashBalancer(servers)
    before = mapping(balancer)
    assert new not in before
    new.enabled = True
    balancer.refresh()
    after = mapping(balancer)
    assert sum(a is new for a in after) / len(KEYS) == pytest.approx(1 / 16, abs=0.015)
    others = [(b, a) for b, a in zip(before, after) if a is not new]
    kept = sum(b is a for b, a in others) / len(others)
    assert kept >= 0.98, f"only {kept:.2%} of keys not taken by the new server stayed"


def test_maglev_minimal_disruption_holds_for_a_large_weighted_pool():
    servers = [Server("web", f"10.1.{i // 200}.{i % 200}", 443, ratio=1 + i % 5)
               for i in range(64)]
    balancer = ConsistentHashBalancer(servers)
    before = mapping(balancer)
    servers[17].draining = True
    balancer.refresh()
    after = mapping(balancer)
    unaffected = [(b, a) for b, a in zip(before, after) if b is not servers[17]]
    assert sum(b is a for b, a in unaffected) / len(unaffected) >= 0.95


def test_maglev_table_shares_follow_ratios():
    servers = make_servers(1, 2, 3, 4, 10)
    balancer = ConsistentHashBalancer(servers)
    shares = balancer.shares()
    total = sum(server.ratio for server in servers)
    for server in servers:
        assert shares[server] == pytest.approx(server.ratio / total, rel=0.03)
    counts = Counter(mapping(balancer))
    for server in servers:
        assert counts[server] / len(KEYS) == pytest.approx(server.ratio / total, abs=0.015)


def test_maglev_equal_ratios_share_the_table_evenly():
    servers = make_servers(*[1] * 7)
    shares = ConsistentHashBalancer(servers).shares()
    entries = [round(share * ConsistentHashBalancer.TABLE_SIZE) for share in shares.values()]
    assert max(entries) - min(entries) <= 1


def test_maglev_ratio_change_is_honoured_after_refresh():
    servers = make_servers(1, 1, 1, 1)
    balancer = ConsistentHashBalancer(servers)
    assert balancer.shares()[servers[0]] == pytest.approx(0.25, rel=0.03)
    servers[0].ratio = 4
    balancer.refresh()
    assert balancer.shares()[servers[0]] == pytest.approx(4 / 7, rel=0.03)


def test_maglev_exclude_walks_to_the_same_next_server_everywhere():
    servers = make_servers(1, 1, 1, 1, 1)
    first = ConsistentHashBalancer(servers)
    second = ConsistentHashBalancer(list(reversed(servers)))
    for key in KEYS[:500]:
        owner = first.pick(key)
        fallback = first.pick(key, exclude={owner})
        assert fallback is not None and fallback is not owner
        assert second.pick(key, exclude=[owner]) is fallback
        assert first.pick(key, exclude=()) is owner


def test_maglev_exclude_spreads_a_servers_keys_over_the_others():
    servers = make_servers(1, 1, 1, 1, 1)
    balancer = ConsistentHashBalancer(servers)
    owned = [key for key in KEYS if balancer.pick(key) is servers[0]]
    fallbacks = Counter(balancer.pick(key, exclude=(servers[0],)) for key in owned)
    assert set(fallbacks) == set(servers[1:])
    assert min(fallbacks.values()) / len(owned) > 0.15


def test_maglev_without_hash_key_falls_back_to_weighted_round_robin():
    servers = make_servers(1, 3)
    balancer = ConsistentHashBalancer(servers)
    assert Counter(pick_many(balancer, 400)) == {servers[0]: 100, servers[1]: 300}


def test_maglev_duplicate_members_each_get_entries():
    servers = [Server("web", "10.0.0.1", 80), Server("web", "10.0.0.1", 80),
               Server("web", "10.0.0.2", 80)]
    shares = ConsistentHashBalancer(servers).shares()
    assert set(shares) == set(servers)
    assert all(share == pytest.approx(1 / 3, rel=0.03) for share in shares.values())
