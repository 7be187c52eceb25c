"""The server health state machine: counts, monitors, maintenance, passive back-off."""
import re

import pytest

from vantage.proxy.backend import Server
from vantage.proxy.health import (
    BACKOFF_INITIAL,
    BACKOFF_MAX,
    MAINTENANCE_REASON,
    TRANSITIONS,
    Machine,
    ServerHealth,
    State,
)


class Changes(list):
    """on_change recorder that also checks the server fields are set before the call."""

    def __call__(self, server, up, reason):
        assert server.up is up and server.down_reason == reason
        self.append((up, reason))


def make(monitors=("hm",), *, ok=2, fail=2, passive=False):
    server = Server("web", "10.0.0.1", 80)
    changes = Changes()
    health = ServerHealth(server, list(monitors), successful_checks=ok, failed_checks=fail,
                          passive=passive, on_change=changes)
    return server, health, changes


def feed(health, monitor, results, now=0.0, reason="status 500"):
    for ok in results:
        health.probe_result(monitor, ok, now, None if ok else reason)


def test_every_target_state_has_its_own_row():
    for machine, rows in TRANSITIONS.items():
        for state, events in rows.items():
            for event, target in events.items():
                assert target in rows, f"{machine}: {state}+{event} -> {target} has no row"


def test_servers_start_up_even_if_marked_down_before():
    server = Server("web", "10.0.0.1", 80)
    server.up, server.down_reason = False, "old"
    health = ServerHealth(server, ["hm"], successful_checks=1, failed_checks=1, passive=False,
                          on_change=Changes())
    assert server.up and server.down_reason is None and health.state is State.UP


def test_down_after_failed_checks_consecutive_failures_only():
    server, health, changes = make(fail=3)
    feed(health, "hm", [False, False, True, False, False])   # the success breaks the run
    assert server.up and changes == []
    feed(health, "hm", [False], reason="HEALTH_MONITOR_HTTP hm: status 500 not in HTTP_2XX")
    assert not server.up
    assert changes == [(False, "HEALTH_MONITOR_HTTP hm: status 500 not in HTTP_2XX")]
    feed(health, "hm", [False, False])                       # already down: no second call
    assert len(changes) == 1


def test_up_after_successful_checks_consecutive_successes():
    server, health, changes = make(ok=3, fail=1)
    feed(health, "hm", [False])
    feed(health, "hm", [True, True, False, True, True])      # the failure breaks the run
    assert not server.up and len(changes) == 1
    feed(health, "hm", [True])
    assert server.up and server.down_reason is None
    assert changes[-1] == (True, None) and len(changes) == 2
    feed(health, "hm", [True, True])
    assert len(changes) == 2


def test_down_reason_follows_the_latest_failure_while_down():
    server, health, changes = make(fail=1)
    health.probe_result("hm", False, 0.0, "hm: status 500")
    health.probe_result("hm", False, 1.0, "hm: connect to 10.0.0.1:80 refused")
    assert server.down_reason == "hm: connect to 10.0.0.1:80 refused"
    assert changes == [(False, "hm: status 500")]


def test_failure_without_reason_gets_one():
    server, health, _ = make(fail=1)
    health.probe_result("hm", False, 0.0)
    assert server.down_reason == "hm: check failed"


def test_server_is_up_only_when_every_monitor_is():
    server, health, changes = make(("a", "b"), ok=1, fail=1)
    health.probe_result("b", False, 0.0, "b: status 404")
    health.probe_result("a", False, 0.0, "a: refused")
    assert changes == [(False, "b: status 404")]             # the first monitor down names it
    health.probe_result("b", True, 1.0)
    assert not server.up and server.down_reason == "a: refused"   # no call, reason moves on
    assert len(changes) == 1
    health.probe_result("a", True, 2.0)
    assert server.up and changes[-1] == (True, None) and len(changes) == 2


def test_thresholds_per_monitor():
    server = Server("web", "10.0.0.1", 80)
    changes = Changes()
    health = ServerHealth(server, ["fast", "slow"], successful_checks={"fast": 1, "slow": 1},
                          failed_checks={"fast": 1, "slow": 3}, passive=False, on_change=changes)
    feed(health, "slow", [False, False])
    assert server.up
    feed(health, "fast", [False])
    assert not server.up
    feed(health, "fast", [True])
    assert server.up and len(changes) == 2


def test_maintenance_code_takes_the_server_down_at_once():
    server, health, changes = make(ok=2, fail=5)
    health.probe_result("hm", False, 0.0, "hm: status 503 is a maintenance code", maintenance=True)
    assert not server.up and changes == [(False, MAINTENANCE_REASON)]
    assert health.monitors["hm"].detail == "hm: status 503 is a maintenance code"
    feed(health, "hm", [True])
    assert not server.up
    feed(health, "hm", [True])
    assert server.up and changes[-1] == (True, None)


def test_maintenance_while_failing_replaces_the_reason():
    server, health, changes = make(fail=1)
    feed(health, "hm", [False], reason="hm: status 500")
    health.probe_result("hm", False, 1.0, "hm: status 503", maintenance=True)
    assert server.down_reason == MAINTENANCE_REASON and len(changes) == 1


def test_passive_failure_with_monitors_goes_down_at_once_and_monitors_bring_it_back():
    server, health, changes = make(("a", "b"), ok=2, fail=3, passive=True)
    health.passive_failure(5.0, "connect to 10.0.0.1:80 refused")
    assert not server.up and changes == [(False, "connect to 10.0.0.1:80 refused")]
    assert health.deadline is None                           # no back-off: monitors decide
    health.poll(100.0)
    assert not server.up
    feed(health, "a", [True, True])
    feed(health, "b", [True])
    assert not server.up                                     # b needs successful_checks too
    feed(health, "b", [True])
    assert server.up and changes[-1] == (True, None) and len(changes) == 2


def test_passive_failure_restarts_the_successes_monitors_need():
    server, health, changes = make(ok=2, fail=1, passive=True)
    feed(health, "hm", [False])
    feed(health, "hm", [True])
    health.passive_failure(1.0, "connection reset by 10.0.0.1:80")
    feed(health, "hm", [True])
    assert not server.up and server.down_reason == "connection reset by 10.0.0.1:80"
    feed(health, "hm", [True])
    assert server.up and len(changes) == 2


def test_passive_input_is_ignored_when_passive_is_off():
    server, health, changes = make(passive=False)
    health.passive_failure(0.0, "connect to 10.0.0.1:80 refused")
    health.passive_success(0.0)
    assert server.up and changes == []

    server, health, changes = make((), passive=False)
    health.passive_failure(0.0, "refused")
    health.poll(10.0)
    assert server.up and changes == []


def test_passive_only_back_off_half_open_trial_and_recovery():
    server, health, changes = make((), passive=True)
    health.passive_failure(10.0, "connect to 10.0.0.1:80 refused")
    assert not server.up and health.state is State.BACKOFF
    assert health.deadline == 10.0 + BACKOFF_INITIAL
    health.poll(10.5)
    assert not server.up
    health.poll(11.0)
    assert server.up and health.half_open and health.deadline is None
    assert changes == [(False, "connect to 10.0.0.1:80 refused"), (True, None)]
    health.passive_success(11.2)                             # the trial flow connected
    assert health.state is State.UP and not health.half_open and len(changes) == 2


def test_passive_only_back_off_doubles_up_to_the_cap_and_success_resets_it():
    _, health, changes = make((), passive=True)
    now, waits = 0.0, []
    for _ in range(8):
        health.passive_failure(now, "refused")               # first failure, then failed trials
        waits.append(health.deadline - now)
        now = health.deadline
        health.poll(now)
        assert health.half_open
    assert waits == [1, 2, 4, 8, 16, BACKOFF_MAX, BACKOFF_MAX, BACKOFF_MAX]
    assert changes.count((False, "refused")) == 8 and changes.count((True, None)) == 8
    health.passive_success(now)
    health.passive_failure(now, "refused")
    assert health.deadline - now == BACKOFF_INITIAL


def test_failures_during_back_off_neither_extend_nor_double_it():
    server, health, changes = make((), passive=True)
    health.passive_failure(0.0, "refused")
    health.passive_failure(0.5, "reset")                     # a flow started before: ignored
    assert health.deadline == 1.0 and server.down_reason == "refused" and len(changes) == 1
    health.poll(1.0)
    health.passive_failure(1.1, "refused")
    assert health.deadline == 1.1 + 2.0


@pytest.mark.parametrize("kwargs, message", [
    ({"monitors": ["a", "a"]}, "listed twice"),
    ({"successful_checks": {"a": 1}}, "successful_checks: no value for monitor(s) 'b'"),
    ({"failed_checks": 0}, "failed_checks['a']: 0 is not a count"),
])
def test_bad_settings_are_named(kwargs, message):
    args = {"monitors": ["a", "b"], "successful_checks": 1, "failed_checks": 1} | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        ServerHealth(Server("web", "10.0.0.1", 80), args["monitors"],
                     successful_checks=args["successful_checks"],
                     failed_checks=args["failed_checks"], passive=False, on_change=Changes())


def test_unknown_monitor_is_an_error_naming_it():
    _, health, _ = make(("hm",))
    with pytest.raises(ValueError, match="'other' is not one of"):
        health.probe_result("other", True, 0.0)


def test_machines_in_use():
    assert make(("hm",), passive=True)[1].machine is Machine.SERVER
    assert make((), passive=True)[1].machine is Machine.SERVER_PASSIVE_ONLY
