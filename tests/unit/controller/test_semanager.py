"""SeCredentials and SeManager: one-time bootstrap tokens with expiry, per-SE secrets, refusals,
the channel's messages, and heartbeat liveness on a fake clock."""
from __future__ import annotations

import asyncio
import json
import os
import stat

import pytest

from vantage.controller import semanager
from vantage.controller.semanager import SeCredentials, SeManager

SE_A = "serviceengine-aaaa"
SE_B = "serviceengine-bbbb"


class FakeTime:
    """Stands in for the `time` module inside semanager: wall and monotonic clocks in step."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(semanager, "time", fake)
    return fake


class MemoryChannel:
    """The SeManager's Channel over two in-memory queues: what the test sends as the SE, and
    what the controller answered."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict] = asyncio.Queue()
        self.close_code: int | None = None

    async def send(self, text: str) -> None:
        if self.close_code is not None:
            raise ConnectionError("closed")
        self.outbox.put_nowait(json.loads(text))

    async def receive(self) -> str:
        item = await self.inbox.get()
        if item is None:
            raise ConnectionError("closed")
        return item

    async def close(self, code: int = 1000) -> None:
        if self.close_code is None:
            self.close_code = code
            self.inbox.put_nowait(None)

    def say(self, message) -> None:
        self.inbox.put_nowait(message if isinstance(message, str) else json.dumps(message))

    async def answer(self) -> dict:
        return await asyncio.wait_for(self.outbox.get(), 5)


@pytest.fixture
def credentials(tmp_path) -> SeCredentials:
    return SeCredentials(tmp_path / "se-credentials.json", token_ttl=60)


@pytest.fixture
def manager(credentials):
    known = {SE_A, SE_B}
    mgr = SeManager(credentials, heartbeat_timeout=3.0, known=known.__contains__)
    mgr.connected: list[str] = []
    mgr.disconnected: list[str] = []
    mgr.messages: list[tuple[str, dict]] = []
    mgr.acks: list[tuple[str, dict]] = []

    async def on_connect(uuid):
        mgr.connected.append(uuid)

    async def on_disconnect(uuid):
        mgr.disconnected.append(uuid)

    mgr.on_connect = on_connect
    mgr.on_disconnect = on_disconnect
    mgr.on_message = lambda uuid, m: mgr.messages.append((uuid, m))
    mgr.on_ack = lambda uuid, m: mgr.acks.append((uuid, m))
    return mgr


async def open_channel(manager: SeManager, hello) -> tuple[MemoryChannel, asyncio.Task, dict]:
    channel = MemoryChannel()
    task = asyncio.create_task(manager.handle(channel, "127.0.0.1:5555"))
    channel.say(hello)
    return channel, task, await channel.answer()


async def finish(channel: MemoryChannel, task: asyncio.Task) -> None:
    await channel.close()
    await asyncio.wait_for(task, 5)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# -- credentials --------------------------------------------------------------------------------

def test_a_token_is_redeemed_once_for_a_secret(credentials):
    token, expires = credentials.issue_token(SE_A)
    assert expires > 0 and credentials.has_pending_token(SE_A)
    secret = credentials.redeem_token(SE_A, token)
    assert secret and secret != token
    assert credentials.redeem_token(SE_A, token) is None
    assert not credentials.has_pending_token(SE_A)
    assert credentials.check_secret(SE_A, secret)
    assert not credentials.check_secret(SE_A, token)
    assert not credentials.check_secret(SE_A, "")
    assert not credentials.check_secret(SE_B, secret)


def test_a_token_is_bound_to_its_se(credentials):
    token, _ = credentials.issue_token(SE_A)
    credentials.issue_token(SE_B)
    assert credentials.redeem_token(SE_B, token) is None
    assert credentials.redeem_token(SE_A, "") is None
    assert credentials.redeem_token("serviceengine-unknown", token) is None
    assert credentials.redeem_token(SE_A, token) is not None


def test_a_token_expires(clock, tmp_path):
    creds = SeCredentials(tmp_path / "c.json", token_ttl=60)
    token, expires = creds.issue_token(SE_A)
    assert expires == clock.now + 60
    clock.advance(61)
    assert not creds.has_pending_token(SE_A)
    assert creds.redeem_token(SE_A, token) is None
    fresh, _ = creds.issue_token(SE_A)  # a new token replaces it
    assert creds.redeem_token(SE_A, fresh) is not None


def test_credentials_are_private_hashed_and_survive_a_restart(credentials):
    token, _ = credentials.issue_token(SE_A)
    credentials.issue_token(SE_B)
    secret = credentials.redeem_token(SE_A, token)
    text = credentials.path.read_text()
    assert stat.S_IMODE(os.stat(credentials.path).st_mode) == 0o600
    assert token not in text and secret not in text
    again = SeCredentials(credentials.path)
    assert again.check_secret(SE_A, secret)
    assert again.has_pending_token(SE_B)
    again.forget(SE_A)
    assert not SeCredentials(credentials.path).check_secret(SE_A, secret)


# -- the channel: who may connect -------------------------------------------------------------

async def test_registration_with_a_token_answers_the_secret(manager, credentials):
    token, _ = credentials.issue_token(SE_A)
    channel, task, welcome = await open_channel(
        manager, {"type": "hello", "se_uuid": SE_A, "token": token, "hostname": "h", "pid": 7,
                  "config_version": None})
    assert welcome["type"] == "welcome" and credentials.check_secret(SE_A, welcome["secret"])
    await settle()
    assert manager.connected == [SE_A]
    session = manager.sessions[SE_A]
    assert (session.hostname, session.pid, session.peer) == ("h", 7, "127.0.0.1:5555")
    assert manager.is_alive(SE_A)
    await finish(channel, task)
    assert SE_A not in manager.sessions and manager.disconnected == [SE_A]


async def test_a_replayed_token_is_refused(manager, credentials, caplog):
    token, _ = credentials.issue_token(SE_A)
    first, task, welcome = await open_channel(
        manager, {"type": "hello", "se_uuid": SE_A, "token": token})
    assert welcome["type"] == "welcome"
    replay, replay_task, answer = await open_channel(
        manager, {"type": "hello", "se_uuid": SE_A, "token": token})
    assert answer == {"type": "refused", "reason": "bootstrap token invalid, expired or already "
                      "used", "retry_with_token": False}
    await asyncio.wait_for(replay_task, 5)
    assert replay.close_code == 1008
    assert manager.refused == 1
    assert "refused SE channel from 127.0.0.1:5555 claiming 'serviceengine-aaaa'" in caplog.text
    # the registered SE was not disturbed
    assert manager.sessions[SE_A].channel is first and first.close_code is None
    await finish(first, task)


async def test_an_expired_token_is_refused(manager, credentials, clock):
    token, _ = credentials.issue_token(SE_A)
    clock.advance(credentials.token_ttl + 1)
    _channel, task, answer = await open_channel(
        manager, {"type": "hello", "se_uuid": SE_A, "token": token})
    assert answer["type"] == "refused" and "expired" in answer["reason"]
    await asyncio.wait_for(task, 5)


async def test_another_ses_identity_with_a_wrong_secret_is_refused(manager, credentials):
    secret_b = credentials.redeem_token(SE_B, credentials.issue_token(SE_B)[0])
    credentials.redeem_token(SE_A, credentials.issue_token(SE_A)[0])
    channel, task, answer = await open_channel(
        manager, {"type": "hello", "se_uuid": SE_A, "secret": secret_b})
    assert answer == {"type": "refused", "reason": "bad credentials", "retry_with_token": False}
    await asyncio.wait_for(task, 5)
    assert channel.close_code == 1008 and SE_A not in manager.sessions
    # its own secret works, with no new secret in the answer
    channel, task, welcome = await open_channel(
        manager, {"type": "hello", "se_uuid": SE_B, "secret": secret_b})
    assert welcome == {"type": "welcome"}
    await finish(channel, task)


async def test_a_wrong_secret_with_a_pending_token_may_retry_with_the_token(manager, credentials):
    token, _ = credentials.issue_token(SE_A)
    channel, task, answer = await open_channel(
        manager, {"type": "hello", "se_uuid": SE_A, "secret": "stale"})
    assert answer["type"] == "refused" and answer["retry_with_token"] is True
    await asyncio.wait_for(task, 5)
    channel, task, welcome = await open_channel(
        manager, {"type": "hello", "se_uuid": SE_A, "token": token})
    assert welcome["type"] == "welcome"
    await finish(channel, task)


@pytest.mark.parametrize("hello", [
    {"type": "hello", "se_uuid": "serviceengine-nobody", "token": "x"},
    {"type": "hello", "se_uuid": "", "token": "x"},
    {"type": "heartbeat", "se_uuid": SE_A},
    {"type": "hello", "se_uuid": SE_A, "token": 12},
])
async def test_unknown_or_malformed_hellos_are_refused(manager, credentials, hello):
    credentials.issue_token(SE_A)
    channel, task, answer = await open_channel(manager, hello)
    assert answer["type"] == "refused"
    await asyncio.wait_for(task, 5)
    assert channel.close_code == 1008 and manager.sessions == {}


@pytest.mark.parametrize("hello", ["not json", "[1, 2]", '"hello"', "null", "3"])
async def test_a_hello_that_is_not_an_object_closes_the_channel(manager, hello):
    channel = MemoryChannel()
    task = asyncio.create_task(manager.handle(channel, "127.0.0.1:5555"))
    channel.say(hello)
    await asyncio.wait_for(task, 5)  # returns: no exception escapes
    assert channel.close_code == 1008 and manager.sessions == {}


async def test_a_newer_channel_replaces_the_old_one(manager, credentials):
    secret = credentials.redeem_token(SE_A, credentials.issue_token(SE_A)[0])
    old, old_task, _ = await open_channel(manager, {"type": "hello", "se_uuid": SE_A,
                                                    "secret": secret})
    new, new_task, _ = await open_channel(manager, {"type": "hello", "se_uuid": SE_A,
                                                    "secret": secret})
    await asyncio.wait_for(old_task, 5)
    assert old.close_code == 4000
    assert manager.sessions[SE_A].channel is new
    assert manager.disconnected == []  # the SE never went away
    await finish(new, new_task)
    assert manager.disconnected == [SE_A]


# -- the channel: messages ------------------------------------------------------------------------

async def registered(manager, credentials, se_uuid=SE_A):
    token, _ = credentials.issue_token(se_uuid)
    channel, task, welcome = await open_channel(
        manager, {"type": "hello", "se_uuid": se_uuid, "token": token})
    assert welcome["type"] == "welcome"
    return channel, task


async def test_messages_reach_their_handlers(manager, credentials):
    channel, task = await registered(manager, credentials)
    channel.say({"type": "heartbeat", "version": "v1", "servers": {"p": [{"server": "s"}]}})
    channel.say({"type": "metrics", "virtualservices": {}})
    channel.say({"type": "logs", "records": [{"status": 200}]})
    channel.say({"type": "ack", "version": "v2", "ok": True})
    channel.say({"type": "ack", "version": "v3", "ok": False, "error": "bad port"})
    channel.say({"type": "something-new"})
    await settle()
    session = manager.sessions[SE_A]
    assert session.servers == {"p": [{"server": "s"}]}
    assert [m["type"] for _, m in manager.messages] == ["metrics", "logs"]
    assert [(u, m["version"]) for u, m in manager.acks] == [(SE_A, "v2"), (SE_A, "v3")]
    assert session.applied_version == "v2"
    assert session.rejected == {"v3": "bad port"}
    await finish(channel, task)


async def test_virtual_services_the_se_left_out_are_recorded(manager, credentials):
    secret = credentials.redeem_token(SE_A, credentials.issue_token(SE_A)[0])
    # an SE that restarts or reconnects says what it left out of the version it serves
    channel, task, _ = await open_channel(manager, {
        "type": "hello", "se_uuid": SE_A, "secret": secret, "config_version": "v1",
        "rejected": {"vs-1": "expired certificate"}})
    session = manager.sessions[SE_A]
    assert session.applied_version == "v1"
    assert session.rejected_vs == {"vs-1": "expired certificate"}
    channel.say({"type": "ack", "version": "v2", "ok": True, "rejected": {}})
    channel.say({"type": "ack", "version": "v3", "ok": False, "error": "no"})
    await settle()
    assert session.applied_version == "v2" and session.rejected_vs == {}
    channel.say({"type": "ack", "version": "v4", "ok": True, "rejected": ["not", "a", "map"]})
    await settle()
    assert session.applied_version == "v4" and session.rejected_vs == {}
    await finish(channel, task)


async def test_a_request_for_another_ses_configuration_is_refused_and_logged(
        manager, credentials, caplog):
    channel, task = await registered(manager, credentials)
    channel.say({"type": "config_request", "se_uuid": SE_B})
    await settle()
    assert f"SE {SE_A} asked for the configuration of SE {SE_B}: refused" in caplog.text
    assert channel.outbox.empty()  # nothing of SE B's was sent
    await finish(channel, task)


@pytest.mark.parametrize("garbage", ["not json", "[1]", "7"])
async def test_a_bad_message_ends_the_session_cleanly(manager, credentials, garbage):
    channel, task = await registered(manager, credentials)
    channel.say(garbage)
    await asyncio.wait_for(task, 5)  # no exception escapes the handler
    assert SE_A not in manager.sessions and manager.disconnected == [SE_A]


async def test_push_sends_a_versioned_configuration(manager, credentials):
    assert await manager.push(SE_A, "v1", {}) is False  # not connected
    channel, task = await registered(manager, credentials)
    assert await manager.push(SE_A, "v1", {"pool": [{"name": "p"}]})
    assert await channel.answer() == {"type": "config", "version": "v1",
                                      "config": {"pool": [{"name": "p"}]}}
    assert manager.sessions[SE_A].sent_version == "v1"
    await finish(channel, task)
    assert await manager.push(SE_A, "v2", {}) is False


# -- liveness ------------------------------------------------------------------------------------

async def test_liveness_follows_heartbeats_and_one_late_heartbeat_does_not_kill(
        manager, credentials, clock):
    channel, task = await registered(manager, credentials)
    start = clock.now
    for _ in range(3):  # heartbeats every second
        clock.advance(1.0)
        channel.say({"type": "heartbeat", "version": None})
        await settle()
    last = clock.now
    # the next one is 2.5 s late: the SE stays alive throughout
    for offset in (0.5, 1.5, 2.4):
        assert manager.is_alive(SE_A, now=last + offset)
    clock.advance(2.5)
    channel.say({"type": "heartbeat", "version": None})
    await settle()
    assert manager.last_seen[SE_A] == start + 5.5
    assert manager.is_alive(SE_A, now=clock.now + 3.0)
    assert not manager.is_alive(SE_A, now=clock.now + 3.01)
    # silence: down after the timeout, although the channel is still open
    clock.advance(3.5)
    assert not manager.is_alive(SE_A)
    assert SE_A in manager.sessions
    channel.say({"type": "heartbeat", "version": None})
    await settle()
    assert manager.is_alive(SE_A)
    await finish(channel, task)


async def test_declare_down_ends_liveness_at_once(manager, credentials):
    channel, task = await registered(manager, credentials)
    assert manager.is_alive(SE_A)
    manager.declare_down(SE_A)
    assert not manager.is_alive(SE_A)
    await finish(channel, task)


def test_an_se_never_heard_from_is_not_alive(manager):
    assert not manager.is_alive(SE_B)


async def test_the_data_interfaces_come_with_the_hello_and_follow_heartbeats(manager, credentials):
    token, _ = credentials.issue_token(SE_A)
    eth0 = {"name": "eth0", "mac": "02:00:00:00:00:01", "addresses": ["10.9.0.2/24"]}
    channel, task, welcome = await open_channel(
        manager, {"type": "hello", "se_uuid": SE_A, "token": token, "interfaces": [eth0]})
    assert welcome["type"] == "welcome"
    session = manager.sessions[SE_A]
    assert [(i.name, i.mac, [str(a) for a in i.addresses]) for i in session.interfaces] == [
        ("eth0", "02:00:00:00:00:01", ["10.9.0.2/24"])]
    # a heartbeat without the key keeps them; one with it replaces them
    channel.say({"type": "heartbeat", "version": None})
    await settle()
    assert len(session.interfaces) == 1
    channel.say({"type": "heartbeat", "version": None,
                 "interfaces": [eth0, {**eth0, "name": "eth1", "addresses": ["bad"]}]})
    await settle()
    assert [i.name for i in session.interfaces] == ["eth0", "eth1"]
    assert session.interfaces[1].addresses == ()
    await finish(channel, task)
