"""Server health as a sans-IO state machine: probe results and passive observations in, up/down
verdicts out.

No I/O and no clock of its own: callers pass `now` (monotonic seconds) and arm a timer for
`ServerHealth.deadline`. Every state and every rule between states is in `TRANSITIONS` below
(the shape follows h11's `_state.py`); the methods only turn inputs into events and run side
effects of entering a state.
"""
from __future__ import annotations

import enum
from collections.abc import Callable, Sequence

from vantage.proxy.backend import Server

#: passive back-off of a server without active monitors: first wait, and the cap of the doubling
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 30.0

#: down reason when a monitor answered one of its maintenance codes
MAINTENANCE_REASON = "maintenance"


class State(enum.Enum):
    UP = "UP"
    DOWN = "DOWN"
    #: passive failure without active monitors: out of rotation until the back-off expires
    BACKOFF = "BACKOFF"
    #: back-off expired: in rotation again for a trial; the next passive result decides
    HALF_OPEN = "HALF_OPEN"


class Event(enum.Enum):
    # results of one active monitor for one server
    PROBE_OK = "PROBE_OK"
    PROBE_FAILED = "PROBE_FAILED"
    MAINTENANCE = "MAINTENANCE"
    # what the proxy saw on a real flow
    PASSIVE_FAILURE = "PASSIVE_FAILURE"
    PASSIVE_SUCCESS = "PASSIVE_SUCCESS"
    # timer
    BACKOFF_EXPIRED = "BACKOFF_EXPIRED"
    # derived from the monitors' verdicts
    ANY_MONITOR_DOWN = "ANY_MONITOR_DOWN"
    ALL_MONITORS_UP = "ALL_MONITORS_UP"


class Machine(enum.Enum):
    #: the verdict of one active monitor on one server
    MONITOR = "MONITOR"
    #: a server judged by its active monitors (up iff every monitor is up; always up with none)
    SERVER = "SERVER"
    #: a server with passive detection and no active monitor
    SERVER_PASSIVE_ONLY = "SERVER_PASSIVE_ONLY"


# machine -> state -> event -> next state. An event missing from a state leaves it unchanged
# (a failure while DOWN, a success while UP). A passive failure of a monitored server forces every
# monitor down, so the monitors' own successful_checks bring the server back.
TRANSITIONS: dict[Machine, dict[State, dict[Event, State]]] = {
    Machine.MONITOR: {
        State.UP: {
            Event.PROBE_FAILED: State.DOWN,      # after failed_checks in a row (RUNS)
            Event.MAINTENANCE: State.DOWN,
            Event.PASSIVE_FAILURE: State.DOWN,
        },
        State.DOWN: {
            Event.PROBE_OK: State.UP,            # after successful_checks in a row (RUNS)
        },
    },
    Machine.SERVER: {
        State.UP: {Event.ANY_MONITOR_DOWN: State.DOWN},
        State.DOWN: {Event.ALL_MONITORS_UP: State.UP},
    },
    Machine.SERVER_PASSIVE_ONLY: {
        State.UP: {Event.PASSIVE_FAILURE: State.BACKOFF},
        State.BACKOFF: {Event.BACKOFF_EXPIRED: State.HALF_OPEN},
        State.HALF_OPEN: {
            Event.PASSIVE_SUCCESS: State.UP,
            Event.PASSIVE_FAILURE: State.BACKOFF,
        },
    },
}

#: transitions of a monitor that fire only after a run of the same event, and the setting that
#: holds the run's length; any other event breaks the run
RUNS: dict[tuple[State, Event], str] = {
    (State.UP, Event.PROBE_FAILED): "failed_checks",
    (State.DOWN, Event.PROBE_OK): "successful_checks",
}

#: states in which the server takes new flows
UP_STATES = frozenset({State.UP, State.HALF_OPEN})

#: events that carry a failure reason
FAILURE_EVENTS = frozenset({Event.PROBE_FAILED, Event.MAINTENANCE, Event.PASSIVE_FAILURE})


class MonitorVerdict:
    """One active monitor's opinion of one server, with the run of identical results so far."""

    __slots__ = ("_run", "_run_event", "checked_at", "detail", "failed_checks", "name", "reason",
                 "state", "successful_checks")

    def __init__(self, name: str, successful_checks: int, failed_checks: int) -> None:
        self.name = name
        self.state = State.UP
        #: why the monitor last failed; None once it is up again
        self.reason: str | None = None
        #: text that came with the latest result, passing or not (e.g. "unsupported")
        self.detail: str | None = None
        #: `now` of the latest active result, or None before the first
        self.checked_at: float | None = None
        self.successful_checks = successful_checks
        self.failed_checks = failed_checks
        self._run_event: Event | None = None
        self._run = 0

    @property
    def up(self) -> bool:
        return self.state in UP_STATES

    def feed(self, event: Event, reason: str | None) -> bool:
        """Apply one event; True when the verdict changed."""
        if event is self._run_event:
            self._run += 1
        else:
            self._run_event, self._run = event, 1
        if event in FAILURE_EVENTS:
            self.reason = reason
        target = TRANSITIONS[Machine.MONITOR][self.state].get(event)
        if target is None:
            return False
        needed = RUNS.get((self.state, event))
        if needed is not None and self._run < getattr(self, needed):
            return False
        self.state = target
        self._run_event, self._run = None, 0
        if target is State.UP:
            self.reason = None
        return True


def _per_monitor(setting: str, value: dict[str, int] | int, monitors: Sequence[str]) -> dict[str, int]:
    if isinstance(value, int):
        value = dict.fromkeys(monitors, value)
    missing = [m for m in monitors if m not in value]
    if missing:
        raise ValueError(f"{setting}: no value for monitor(s) {', '.join(map(repr, missing))}")
    for monitor in monitors:
        count = value[monitor]
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"{setting}[{monitor!r}]: {count!r} is not a count of 1 or more")
    return {m: value[m] for m in monitors}


class ServerHealth:
    """Health of one pool server: the verdicts of its active monitors and passive detection.

    Servers start up (the constructor sets `server.up`). `on_change(server, up, reason)` is
    called once per change of `server.up`, after `server.up` and `server.down_reason` were set.
    While the server stays down its `down_reason` follows the latest failure of the monitor that
    has been down longest, without a new call.
    """

    def __init__(self, server: Server, monitors: Sequence[str], *,
                 successful_checks: dict[str, int] | int, failed_checks: dict[str, int] | int,
                 passive: bool, on_change: Callable[[Server, bool, str | None], None]) -> None:
        if len(set(monitors)) != len(monitors):
            raise ValueError(f"monitors: a name is listed twice in {list(monitors)}")
        ok_runs = _per_monitor("successful_checks", successful_checks, monitors)
        fail_runs = _per_monitor("failed_checks", failed_checks, monitors)
        self.server = server
        self.monitors = {m: MonitorVerdict(m, ok_runs[m], fail_runs[m]) for m in monitors}
        self.passive = passive
        self.machine = (Machine.SERVER_PASSIVE_ONLY if passive and not monitors
                        else Machine.SERVER)
        self.state = State.UP
        #: monotonic time at which `poll` has something to do, or None
        self.deadline: float | None = None
        self._on_change = on_change
        self._backoff = BACKOFF_INITIAL
        #: down monitors in the order they went down (a dict as an ordered set)
        self._down: dict[str, None] = {}
        server.up, server.down_reason = True, None

    @property
    def up(self) -> bool:
        return self.state in UP_STATES

    @property
    def half_open(self) -> bool:
        """In rotation for a trial after a passive back-off; a balancer may limit it to one flow."""
        return self.state is State.HALF_OPEN

    # -- inputs ----------------------------------------------------------------------------

    def probe_result(self, monitor: str, ok: bool, now: float, reason: str | None = None, *,
                     maintenance: bool = False) -> None:
        """One active result. `maintenance`: the server answered a maintenance code."""
        verdict = self.monitors.get(monitor)
        if verdict is None:
            raise ValueError(f"monitor {monitor!r} is not one of {sorted(self.monitors)} "
                             f"for server {self.server.key}")
        verdict.detail, verdict.checked_at = reason, now
        if maintenance:
            event, reason = Event.MAINTENANCE, MAINTENANCE_REASON
        elif ok:
            event = Event.PROBE_OK
        else:
            event, reason = Event.PROBE_FAILED, reason or f"{monitor}: check failed"
        self._feed_monitor(verdict, event, now, reason)

    def passive_failure(self, now: float, reason: str) -> None:
        """A connect refusal, connect timeout or reset seen on a real flow."""
        if not self.passive:
            return
        for verdict in self.monitors.values():
            self._feed_monitor(verdict, Event.PASSIVE_FAILURE, now, reason)
        self._feed_server(Event.PASSIVE_FAILURE, now, reason)

    def passive_success(self, now: float) -> None:
        """A real flow connected; ends a half-open trial and resets the back-off."""
        if not self.passive:
            return
        self._backoff = BACKOFF_INITIAL
        self._feed_server(Event.PASSIVE_SUCCESS, now, None)

    def poll(self, now: float) -> None:
        """Run the timers that are due at `now`."""
        if self.deadline is not None and now >= self.deadline:
            self.deadline = None
            self._feed_server(Event.BACKOFF_EXPIRED, now, None)

    # -- machinery -------------------------------------------------------------------------

    def _feed_monitor(self, verdict: MonitorVerdict, event: Event, now: float,
                      reason: str | None) -> None:
        if verdict.feed(event, reason):
            if verdict.up:
                del self._down[verdict.name]
            else:
                self._down[verdict.name] = None
        # the server's verdict follows from its monitors'; the table ignores a repeated one
        if self._down:
            reason = self.monitors[next(iter(self._down))].reason
            self._feed_server(Event.ANY_MONITOR_DOWN, now, reason)
            self._set_reason(reason)
        else:
            self._feed_server(Event.ALL_MONITORS_UP, now, None)

    def _feed_server(self, event: Event, now: float, reason: str | None) -> None:
        target = TRANSITIONS[self.machine][self.state].get(event)
        if target is None:
            return
        was_up = self.up
        self.state = target
        if target is State.BACKOFF:
            self.deadline = now + self._backoff
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)
        if self.up != was_up:
            self.server.up = self.up
            self.server.down_reason = None if self.up else reason
            self._on_change(self.server, self.up, self.server.down_reason)

    def _set_reason(self, reason: str | None) -> None:
        if not self.server.up:
            self.server.down_reason = reason
