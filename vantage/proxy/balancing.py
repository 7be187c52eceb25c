"""Load-balancing choice: which pool server takes a new flow. Sans-IO; pick() runs once per flow.

Each balancer precomputes in refresh() everything pick() needs (the available servers, weights,
schedules, lookup tables), so pick() does no per-call set-up. The pool calls refresh() after any
server's enabled/up/draining state or ratio changed, and after adding or removing servers in the
sequence it handed over (the balancer keeps a reference to it and reads it again).
"""
from __future__ import annotations

import abc
import hashlib
import math
import random
from bisect import bisect_right
from collections import Counter
from collections.abc import Collection, Sequence
from itertools import accumulate
from operator import add

from vantage.model.enums import LbAlgorithm
from vantage.proxy.backend import Server


class Balancer(abc.ABC):
    """Chooses a server for each new flow among the pool's available servers.

    A server is available when enabled, up and not draining (`Server.available`); others never
    get new flows. Choices reflect the servers' state as of the last refresh(); pick() also checks
    the server it is about to return and refreshes by itself if that one has become unavailable.
    """

    #: the Avi `lb_algorithm` value this balancer implements
    algorithm: str

    def __init__(self, servers: Sequence[Server]) -> None:
        """Balance over `servers`, a sequence the pool may change in place before refresh()."""
        self.servers = servers
        self._available: list[Server] = []
        self.refresh()

    @abc.abstractmethod
    def pick(self, hash_key: bytes | None = None,
             exclude: Collection[Server] = ()) -> Server | None:
        """Choose a server for a new flow among available servers not in `exclude`.

        `hash_key` places the flow for consistent hashing and is ignored by other algorithms.
        `exclude` holds servers already tried for this flow (connect retries).
        Returns None when no available server is left outside `exclude`.
        """

    def refresh(self) -> None:
        """Called after any server's availability (enabled/up/draining) or ratio changed.

        Raises ValueError naming the server when a ratio is not a positive integer.
        """
        available = []
        for server in self.servers:
            ratio = server.ratio
            if type(ratio) is not int or ratio < 1:
                raise ValueError(f"pool {server.pool_name!r} server {server.key}: ratio must be "
                                 f"an integer from 1 to 20, got {ratio!r}")
            if server.available:
                available.append(server)
        self._available = available

    def _repick(self, hash_key: bytes | None, exclude: Collection[Server]) -> Server | None:
        # A server changed state without refresh() being called: catch up, then choose again.
        # Terminates: after refresh() the stale server is no longer among the candidates.
        self.refresh()
        return self.pick(hash_key, exclude)

    def _any_left(self, exclude: Collection[Server]) -> bool:
        for server in self._available:
            if server not in exclude:
                return True
        return False


def smooth_weighted_schedule(weights: Sequence[int]) -> list[int]:
    """One period of nginx's smooth weighted round robin over `weights`, as indexes.

    Each turn every current weight grows by its weight, the largest (first on ties) is chosen and
    loses the total. After sum(weights) turns all current weights are back to zero, so the
    sequence repeats with that period; each index appears exactly weight times, spread out.
    """
    total = sum(weights)
    current = [0] * len(weights)
    order = []
    for _ in range(total):
        current = list(map(add, current, weights))
        chosen = current.index(max(current))
        current[chosen] -= total
        order.append(chosen)
    return order


class RoundRobinBalancer(Balancer):
    """Smooth weighted round robin (nginx): servers in proportion to ratio, evenly interleaved.

    The schedule is periodic, so one period is precomputed and pick() is an index step. Pools
    whose schedule would cost more than SCHEDULE_BUILD_LIMIT weight additions to precompute
    (over ~100 servers with mixed ratios) run the same algorithm one turn per pick() instead.
    """

    algorithm = LbAlgorithm.LB_ALGORITHM_ROUND_ROBIN.value
    SCHEDULE_BUILD_LIMIT = 100_000

    def __init__(self, servers: Sequence[Server]) -> None:
        self._position = 0
        super().__init__(servers)

    def refresh(self) -> None:
        super().refresh()
        available = self._available
        weights = [server.ratio for server in available]
        if weights:
            # Dividing by the gcd keeps the same sequence with a shorter period.
            divisor = math.gcd(*weights)
            weights = [weight // divisor for weight in weights]
        total = sum(weights)
        self._weights = weights
        self._total = total
        self._current = [0] * len(weights)
        if len(weights) * total <= self.SCHEDULE_BUILD_LIMIT:
            self._schedule: list[Server] | None = [
                available[i] for i in smooth_weighted_schedule(weights)]
            # Keep going from where we were rather than restarting the period on every change.
            self._position = self._position % total if total else 0
        else:
            self._schedule = None

    def pick(self, hash_key: bytes | None = None,
             exclude: Collection[Server] = ()) -> Server | None:
        if not self._total:
            return None
        if exclude:
            return self._pick_excluding(exclude)
        schedule = self._schedule
        if schedule is not None:
            position = self._position
            server = schedule[position]
            position += 1
            self._position = 0 if position == self._total else position
        else:
            server = self._step()
        if server.available:
            return server
        return self._repick(hash_key, exclude)

    def _step(self) -> Server:
        current = self._current = list(map(add, self._current, self._weights))
        chosen = current.index(max(current))
        current[chosen] -= self._total
        return self._available[chosen]

    def _pick_excluding(self, exclude: Collection[Server]) -> Server | None:
        if not self._any_left(exclude):
            return None
        # Every server comes up within one period (W turns), so this loop ends early.
        for _ in range(2 * self._total + 1):
            server = self.pick()
            if server is None or server not in exclude:
                return server
        return next((s for s in self._available if s not in exclude), None)


class LeastConnectionsBalancer(Balancer):
    """Fewest active connections relative to ratio; equal servers take turns.

    Loads compare exactly as integers: active_conns * (lcm of ratios // ratio).
    The scan starts after the last chosen server, so among equally loaded servers the first one
    found wins and the load rotates.
    """

    algorithm = LbAlgorithm.LB_ALGORITHM_LEAST_CONNECTIONS.value

    def __init__(self, servers: Sequence[Server]) -> None:
        self._start = 0
        super().__init__(servers)

    def refresh(self) -> None:
        super().refresh()
        available = self._available
        ratios = [server.ratio for server in available]
        common = math.lcm(*ratios) if ratios else 1
        scales = [common // ratio for ratio in ratios]
        # Doubled lists: a scan from any start index is one contiguous range.
        self._ring = available + available
        self._scales = scales + scales
        self._count = len(available)
        if self._start >= self._count:
            self._start = 0

    def pick(self, hash_key: bytes | None = None,
             exclude: Collection[Server] = ()) -> Server | None:
        count = self._count
        if not count:
            return None
        ring = self._ring
        scales = self._scales
        best = -1
        best_load = 0
        if exclude:
            for i in range(self._start, self._start + count):
                server = ring[i]
                if server in exclude:
                    continue
                load = server.active_conns * scales[i]
                if best < 0 or load < best_load:
                    best = i
                    best_load = load
            if best < 0:
                return None
        else:
            for i in range(self._start, self._start + count):
                load = ring[i].active_conns * scales[i]
                if not load:
                    best = i
                    break
                if best < 0 or load < best_load:
                    best = i
                    best_load = load
        server = ring[best]
        best += 1
        self._start = best if best < count else best - count
        if server.available:
            return server
        return self._repick(hash_key, exclude)


class FastestResponseBalancer(Balancer):
    """Lowest ewma_response_time; servers not measured yet are tried first.

    A server with no sample (0.0) and no active connection is chosen before any measured server.
    One with no sample but a flow already in flight ranks after the measured servers, so a server
    that never answers gets one trial flow at a time instead of every new flow. Equal response
    times go to the server with fewer active connections; full ties take turns. Ratio is not used.
    """

    algorithm = LbAlgorithm.LB_ALGORITHM_FASTEST_RESPONSE.value

    def __init__(self, servers: Sequence[Server]) -> None:
        self._start = 0
        super().__init__(servers)

    def refresh(self) -> None:
        super().refresh()
        self._ring = self._available + self._available
        self._count = len(self._available)
        if self._start >= self._count:
            self._start = 0

    def pick(self, hash_key: bytes | None = None,
             exclude: Collection[Server] = ()) -> Server | None:
        count = self._count
        if not count:
            return None
        ring = self._ring
        inf = math.inf
        best = -1
        best_time = inf
        best_active = 0
        for i in range(self._start, self._start + count):
            server = ring[i]
            if exclude and server in exclude:
                continue
            seconds = server.ewma_response_time
            active = server.active_conns
            if seconds == 0.0:
                if not active:
                    best = i
                    break
                seconds = inf
            if (best < 0 or seconds < best_time
                    or (seconds == best_time and active < best_active)):
                best = i
                best_time = seconds
                best_active = active
        if best < 0:
            return None
        server = ring[best]
        best += 1
        self._start = best if best < count else best - count
        if server.available:
            return server
        return self._repick(hash_key, exclude)


class ConsistentHashBalancer(Balancer):
    """Maglev consistent hashing (Eisenbud et al., NSDI 2016, section 3.4), weighted by ratio.

    Each available server walks its own permutation of the lookup table (offset and skip from a
    hash of its ip:port) and claims `ratio` empty entries per round until the table is full. A
    key maps to table[hash(key) % size], so a lookup is O(1), every server's share of the table
    follows its ratio, and when a server leaves or joins mostly the keys it owned (or now owns)
    move. Hashes are blake2b, so every process and every SE maps a key the same way; servers are
    placed in ip:port order, so the order of the pool's list does not matter either.

    The table has TABLE_SIZE entries, a prime. Building it is pure Python, about 8 ms for 64
    servers on one core here, and happens on every refresh(); the paper's 65537 took 30-40 ms.
    With 16381 entries a 64-server pool moves about 1.1% of the keys of servers that stay when one
    leaves, and each server's share is within one entry per ratio unit of its weight share
    (under 1% off for 64 servers; it coarsens past a few hundred servers).
    Without a hash key, flows go round robin.
    """

    algorithm = LbAlgorithm.LB_ALGORITHM_CONSISTENT_HASH.value
    TABLE_SIZE = 16381

    def __init__(self, servers: Sequence[Server], *, table_size: int = TABLE_SIZE) -> None:
        if (type(table_size) is not int or table_size < 3
                or any(table_size % d == 0 for d in range(2, math.isqrt(table_size) + 1))):
            raise ValueError(f"table_size must be a prime number (e.g. {self.TABLE_SIZE}), "
                             f"got {table_size!r}")
        self.table_size = table_size
        self._table: list[Server] = []
        self._round_robin = RoundRobinBalancer(servers)
        super().__init__(servers)

    def refresh(self) -> None:
        super().refresh()
        self._round_robin.refresh()
        self._table = self._build_table(self._available, self.table_size)

    @staticmethod
    def _permutation(name: bytes, size: int) -> tuple[int, int]:
        digest = hashlib.blake2b(name, digest_size=16, person=b"vantage-maglev").digest()
        offset = int.from_bytes(digest[:8], "little") % size
        skip = int.from_bytes(digest[8:], "little") % (size - 1) + 1
        return offset, skip

    @classmethod
    def _build_table(cls, available: Sequence[Server], size: int) -> list[Server]:
        if not available:
            return []
        servers = sorted(available, key=lambda server: server.key)
        positions = []
        skips = []
        seen: Counter[str] = Counter()
        for server in servers:
            name = server.key
            seen[name] += 1
            if seen[name] > 1:  # the same ip:port twice in one pool: give each its own walk
                name = f"{name}#{seen[name]}"
            offset, skip = cls._permutation(name.encode(), size)
            positions.append(offset)
            skips.append(skip)
        ratios = [server.ratio for server in servers]
        table: list[Server | None] = [None] * size
        left = size
        # Hot loop of the build: everything in locals, positions advanced by addition.
        while True:
            for i, server in enumerate(servers):
                position = positions[i]
                skip = skips[i]
                turns = ratios[i]
                while True:
                    while table[position] is not None:
                        position += skip
                        if position >= size:
                            position -= size
                    table[position] = server
                    left -= 1
                    if not left:
                        return table  # type: ignore[return-value]
                    turns -= 1
                    if not turns:
                        break
                position += skip
                if position >= size:
                    position -= size
                positions[i] = position

    def pick(self, hash_key: bytes | None = None,
             exclude: Collection[Server] = ()) -> Server | None:
        if hash_key is None:
            return self._round_robin.pick(None, exclude)
        table = self._table
        if not table:
            return None
        size = self.table_size
        index = int.from_bytes(
            hashlib.blake2b(hash_key, digest_size=8).digest(), "little") % size
        server = table[index]
        if exclude and server in exclude:
            # Walk on to the next entries: deterministic, and spread like the table itself.
            if not self._any_left(exclude):
                return None
            for _ in range(size):
                index += 1
                if index == size:
                    index = 0
                server = table[index]
                if server not in exclude:
                    break
            else:
                return None
        if server.available:
            return server
        return self._repick(hash_key, exclude)

    def shares(self) -> dict[Server, float]:
        """Each available server's fraction of the lookup table (about its ratio share)."""
        size = len(self._table)
        return {server: count / size for server, count in Counter(self._table).items()}


class RandomBalancer(Balancer):
    """Weighted random: each flow goes to a server with probability ratio / sum of ratios.

    `rng` is a random.Random or an int seed (for reproducible tests); by default a fresh
    random.Random seeded from the OS.
    """

    algorithm = LbAlgorithm.LB_ALGORITHM_RANDOM.value

    def __init__(self, servers: Sequence[Server], *,
                 rng: random.Random | int | None = None) -> None:
        if rng is None or type(rng) is int:
            rng = random.Random(rng)
        elif not isinstance(rng, random.Random):
            raise TypeError(f"rng must be a random.Random or an int seed, got {rng!r}")
        self._rng = rng
        self._random = rng.random
        super().__init__(servers)

    def refresh(self) -> None:
        super().refresh()
        self._cumulative = list(accumulate(server.ratio for server in self._available))
        self._total = self._cumulative[-1] if self._cumulative else 0
        self._last = len(self._cumulative) - 1

    def pick(self, hash_key: bytes | None = None,
             exclude: Collection[Server] = ()) -> Server | None:
        if not self._total:
            return None
        if exclude:
            candidates = [server for server in self._available if server not in exclude]
            if not candidates:
                return None
            server = self._rng.choices(candidates, [s.ratio for s in candidates])[0]
        else:
            # hi=last: random() * total can round up to total itself.
            server = self._available[
                bisect_right(self._cumulative, self._random() * self._total, 0, self._last)]
        if server.available:
            return server
        return self._repick(hash_key, exclude)


_BALANCERS: dict[str, type[Balancer]] = {
    cls.algorithm: cls
    for cls in (RoundRobinBalancer, LeastConnectionsBalancer, ConsistentHashBalancer,
                FastestResponseBalancer, RandomBalancer)
}


def make_balancer(algorithm: str, servers: Sequence[Server], *,
                  rng: random.Random | int | None = None) -> Balancer:
    """The balancer for a pool's `lb_algorithm` (an LbAlgorithm value) over `servers`.

    `rng` seeds LB_ALGORITHM_RANDOM and is ignored by the other algorithms.
    Raises ValueError naming the algorithm when it is not one of LbAlgorithm's values.
    """
    cls = _BALANCERS.get(algorithm) if isinstance(algorithm, str) else None
    if cls is None:
        raise ValueError(f"lb_algorithm {algorithm!r} is not supported; use one of "
                         f"{', '.join(_BALANCERS)}")
    if cls is RandomBalancer:
        return RandomBalancer(servers, rng=rng)
    return cls(servers)
