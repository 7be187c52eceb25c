"""The control loop: desired state in the store -> SEs, placements and pushed configurations.

Every pass reads a snapshot of the store, asks `placement.place` where each virtual service
runs, creates or removes SEs through the cloud driver (creates run in the background: a slow
cloud does not hold the loop), allocates VIPs (the cloud's own IPAM through the driver, or the
static ranges of `network` objects), compiles one configuration document per SE (only the
virtual services placed on it, with everything they refer to) and pushes it to that SE if it
changed, and plumbs VIPs on the SEs the cloud's return path says. SE health comes from the
channel's heartbeats (SeManager). Runtime state (oper status with reason, SEs, placement
history, return path) is kept here and served by the API.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import dataclasses
import hashlib
import ipaddress
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from vantage.analytics.store import AnalyticsStore
from vantage.cloud.base import (
    Bootstrap,
    CloudDriver,
    CloudError,
    ReturnPath,
    SeSpec,
    SeState,
    VipRequest,
)
from vantage.cloud.local import vip_network
from vantage.controller import ipam, placement, scaleout
from vantage.controller.semanager import SeCredentials, SeManager
from vantage.db.store import StoredObject
from vantage.model.registry import set_path

LOG = logging.getLogger("vantage.controller.controlplane")

SE_DOC_KINDS = ("sslkeyandcertificate", "sslprofile", "healthmonitor",
                "applicationpersistenceprofile", "pool", "httppolicyset", "applicationprofile",
                "networkprofile", "vsvip", "virtualservice")
_META = ("tenant_ref", "url", "_last_modified", "last_modified")


@dataclasses.dataclass
class VsRuntime:
    oper_status: str = "OPER_DOWN"
    reason: str | None = "not placed yet"
    vip: list[str] = dataclasses.field(default_factory=list)
    service_engines: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    history: deque = dataclasses.field(default_factory=lambda: deque(maxlen=20))
    since: float = dataclasses.field(default_factory=time.time)
    #: how secondaries reach clients ("asymmetric", "symmetric"), from the SE group's cloud
    return_path: str | None = None

    def as_dict(self, uuid: str, name: str) -> dict[str, Any]:
        return {"uuid": uuid, "name": name, "oper_status": {
                    "state": self.oper_status, "reason": [self.reason] if self.reason else [],
                    "last_changed_time": {"secs": int(self.since)}},
                "vip_summary": [{"ip_address": {"addr": a, "type": _ip_type(a)}}
                                for a in self.vip],
                "service_engine": self.service_engines,
                "return_path": self.return_path,
                "placement_history": list(self.history)}


def _ip_type(address: str) -> str:
    return "V6" if ":" in address else "V4"


class _AllocationPending(Exception):
    """A VIP's allocate_vip call is to run in the pass's pool (ControlPlane._allocate_vips)."""


@dataclasses.dataclass
class SeRecord:
    uuid: str
    name: str
    group: str
    created_at: float
    idle_since: float | None = None
    state: str = "creating"
    reason: str | None = None


class ControlPlane:
    def __init__(self, conf, store, *, driver_classes: dict[str, type[CloudDriver]],
                 controller_url: str, controller_ca: str | None,
                 secrets_of: Callable[[StoredObject], dict[str, str]] | None = None) -> None:
        self.conf = conf
        self.store = store
        #: plaintext secrets (private keys, passphrases) of an object, for the SE documents
        self.secrets_of = secrets_of or (lambda obj: {})
        self.driver_classes = driver_classes
        #: cloud uuid -> its driver instance
        self.drivers: dict[str, CloudDriver] = {}
        self.controller_url = controller_url
        self.controller_ca = controller_ca
        cp = conf.controlplane
        state = Path(conf.state_path)
        self.credentials = SeCredentials(state / "se-credentials.json",
                                         token_ttl=cp.bootstrap_token_ttl)
        self.semanager = SeManager(self.credentials, heartbeat_timeout=cp.se_heartbeat_timeout,
                                   known=self._known_se)
        self.semanager.on_connect = self._on_se_connect
        self.semanager.on_ack = self._on_ack
        self.semanager.on_disconnect = self._on_se_disconnect
        self.vs_runtime: dict[str, VsRuntime] = {}
        #: cloud uuid -> result of the last background check (validate, network discovery)
        self.cloud_state: dict[str, dict[str, Any]] = {}
        #: cloud uuid -> its last failed SE create (name, reason, time) until one succeeds
        self.se_create_failures: dict[str, dict[str, Any]] = {}
        #: where each virtual service runs; kept in the state directory so that a restarted
        #: controller leaves virtual services where they are while its SEs reconnect
        self.placements_file = state / "placements.json"
        self.placements: dict[str, placement.VsPlacement] = self._load_placements()
        #: "<vsvip uuid>/<vip_id>" -> what was allocated for that VIP and how (the request,
        #: the cloud, whether its driver reserved it); kept in the state directory so that a
        #: restarted controller still releases what a cloud reserved
        self.vip_allocations_file = state / "vip-allocations.json"
        self.vip_allocations: dict[str, dict[str, Any]] = self._load_vip_allocations()
        #: vsvip uuid -> why some of its VIPs have no (usable) address, this pass
        self.vip_problems: dict[str, list[str]] = {}
        #: (vsvip uuid, vip_id) of VIPs not served: their address is refused
        self.vip_withheld: set[tuple[str, str]] = set()
        #: "<vsvip uuid>/<vip_id>" -> the problem last logged for it (each is logged once)
        self._vip_logged: dict[str, str] = {}
        #: SE group uuid -> the SE address problem last logged for it
        self._se_ip_logged: dict[str, str] = {}
        self.ses: dict[str, SeRecord] = {}
        #: SE uuid -> its driver.create_se call, running in the background
        self._creating: dict[str, asyncio.Task] = {}
        self.se_docs: dict[str, tuple[str, dict[str, Any]]] = {}
        self.se_rejections: dict[str, dict[str, str]] = {}
        #: SE uuid -> (applied version, virtual services it serves with that version)
        self.se_serving: dict[str, tuple[str, frozenset[str]]] = {}
        #: (SE uuid, VIP) -> primary flag, for every VIP the cloud driver has plumbed
        self.plumbed: dict[tuple[str, str], bool] = {}
        #: (SE uuid, VIP) -> the last plumbing error, logged once
        self._plumb_errors: dict[tuple[str, str], str] = {}
        #: (SE uuid, VIP) -> the cloud network ID of a plumbed VIP, when its network is known
        self._plumbed_network: dict[tuple[str, str], str] = {}
        #: SE uuid -> cloud network ID -> the SE's interface there, as attach_network answered
        #: (name, network_ref, address, since); kept in the state directory so that a
        #: restarted controller still detaches what it attached
        self.se_networks_file = state / "se-networks.json"
        self.se_networks: dict[str, dict[str, dict[str, Any]]] = self._load_se_networks()
        #: (SE uuid, cloud network ID) -> its attach_network or detach_network call, running
        #: in the background, and which of the two it is
        self._wiring: dict[tuple[str, str], tuple[str, asyncio.Task]] = {}
        #: bounds the attach/detach calls running at once
        self._wiring_slots = asyncio.Semaphore(self.NETWORK_CALLS_AT_ONCE)
        #: (SE uuid, cloud network ID) -> the last failed attach or detach (retried after a
        #: backoff): op, network name, reason, monotonic time, consecutive failures
        self.network_errors: dict[tuple[str, str], dict[str, Any]] = {}
        #: virtual service uuid -> the cloud network IDs of its VIPs, this pass
        self._vs_networks: dict[str, set[str]] = {}
        #: "<vsvip uuid>/<vip_id>" -> (request, allocation or CloudError) of an allocate_vip
        #: call made in the pass's pool, taken by the allocation that follows it
        self._vip_prefetched: dict[str, tuple[VipRequest, Any]] = {}
        self.analytics = AnalyticsStore(str(state / "analytics.db"))
        self.analytics_sinks: list = [self.analytics.ingest]
        #: SE uuid -> its latest metrics message (cumulative counters)
        self.latest_metrics: dict[str, dict[str, Any]] = {}
        self.metrics_registry = CollectorRegistry(auto_describe=False)
        self.metrics_registry.register(_ControllerCollector(self))
        self.semanager.on_message = self._on_se_message
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self.passes = 0
        self.last_error: str | None = None
        #: set when the server begins to shut down: uvicorn closes every SE channel before
        #: the lifespan shutdown stops this loop, and SEs must not look dead meanwhile
        self.stopping = False

    # lifecycle ---------------------------------------------------------------------------

    def _known_se(self, se_uuid: str) -> bool:
        with self.store.begin() as tx:
            obj = tx.get(se_uuid)
        return obj is not None and obj.kind == "serviceengine"

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self.stopping = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for state in self.cloud_state.values():
            task = state.get("task")
            if task is not None and not task.done():
                task.cancel()
        for task in list(self._creating.values()):
            task.cancel()
        for _op, task in list(self._wiring.values()):
            task.cancel()
        self.analytics.flush()

    def wake(self) -> None:
        """Run a pass soon (called after API writes)."""
        self._wake.set()

    async def _run(self) -> None:
        interval = self.conf.controlplane.reconcile_interval
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.reconcile()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop must survive any one bad pass
                self.last_error = str(exc)
                LOG.exception("control loop pass failed")
            # a pass reads the whole desired state: under a storm of API writes, passes would
            # follow each other back to back; leave the API at least three times a pass's time
            await asyncio.sleep(min(interval, 3 * (loop.time() - started)))
            try:
                await asyncio.wait_for(self._wake.wait(), interval)
            except TimeoutError:
                pass
            self._wake.clear()

    # one pass ----------------------------------------------------------------------------

    async def reconcile(self) -> None:
        if self.stopping:
            return
        async with self._lock:
            snapshot = await asyncio.to_thread(self._snapshot)
            await self._reconcile(snapshot)
            self.passes += 1

    def _snapshot(self) -> dict[str, dict[str, StoredObject]]:
        kinds = SE_DOC_KINDS + ("serviceenginegroup", "serviceengine", "cloud", "network")
        snap: dict[str, dict[str, StoredObject]] = {}
        with self.store.begin() as tx:
            for kind in kinds:
                _, objs = tx.list(kind, None, limit=None)
                snap[kind] = {o.uuid: o for o in objs}
        return snap

    async def _reconcile(self, snap: dict[str, dict[str, StoredObject]]) -> None:
        now = time.time()
        self._sync_clouds(snap)
        groups = {uuid: _group_spec(o) for uuid, o in snap["serviceenginegroup"].items()}
        default_group = next((u for u, o in snap["serviceenginegroup"].items()
                              if o.name == "Default-Group"), None)
        # SEs the controller knows of: from the store, with health from the channel
        for uuid, obj in snap["serviceengine"].items():
            if uuid not in self.ses:
                self.ses[uuid] = SeRecord(uuid, obj.name, obj.body.get("se_group_ref") or "",
                                          created_at=now, state="adopted")
        for uuid in list(self.ses):
            if uuid not in snap["serviceengine"]:
                del self.ses[uuid]
        statuses = []
        timeout = self.conf.controlplane.se_create_timeout
        for record in self.ses.values():
            alive = self.semanager.is_alive(record.uuid)
            # a new SE has se_create_timeout to register; one known from before a controller
            # restart has a few heartbeat periods to reconnect before it counts as down (so a
            # restarted controller adopts its SEs instead of creating new ones)
            grace = timeout if record.state == "creating" else \
                max(10.0, 3 * self.conf.controlplane.se_heartbeat_timeout)
            pending = (not alive and record.state in ("creating", "adopted")
                       and now - record.created_at < grace)
            if alive:
                record.state, record.reason = "up", None
            elif record.state == "up" or (record.state == "adopted" and not pending):
                record.state, record.reason = "down", "missed heartbeats"
                LOG.warning("SE %s (%s) is down: no heartbeat for %.0fs", record.name,
                            record.uuid, self.conf.controlplane.se_heartbeat_timeout)
            statuses.append(placement.SeStatus(record.uuid, record.group, alive, pending))

        demands = []
        names = {}
        for uuid, vs in snap["virtualservice"].items():
            names[uuid] = vs.name
            if not vs.body.get("enabled", True):
                continue
            group = vs.body.get("se_group_ref") or default_group
            demands.append(placement.VsDemand(uuid, vs.name, group))
        result = placement.place(groups, statuses, demands, self.placements)
        self._record_moves(result, names, now)
        if result.placements != self.placements:
            await asyncio.to_thread(self._save_placements, result.placements)
        self.placements = result.placements

        await self._scale(snap, groups, result, now)
        await asyncio.to_thread(self._allocate_vips, snap)
        docs = self._documents(snap, result)
        for se_uuid, (version, document) in docs.items():
            session = self.semanager.sessions.get(se_uuid)
            if session is None:
                continue
            if session.applied_version != version and session.sent_version != version:
                await self.semanager.push(se_uuid, version, document)
        self.se_docs = docs
        # VIPs follow placement: plumbed on the SEs now serving them, removed from the others
        await self._plumb_vips(snap, result)
        self._update_runtime(snap, result, docs, now)

    def _load_placements(self) -> dict[str, placement.VsPlacement]:
        try:
            saved = json.loads(self.placements_file.read_text())
            return {vs: placement.VsPlacement(tuple(where["active"]), where.get("standby"))
                    for vs, where in saved.items()}
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return {}

    def _save_placements(self, placements: dict[str, placement.VsPlacement]) -> None:
        saved = {vs: {"active": list(where.active), "standby": where.standby}
                 for vs, where in placements.items()}
        tmp = self.placements_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(saved))
        tmp.replace(self.placements_file)

    def _record_moves(self, result: placement.PlacementResult, names: dict[str, str],
                      now: float) -> None:
        for vs_uuid, new in result.placements.items():
            old = self.placements.get(vs_uuid)
            if old != new:
                runtime = self.vs_runtime.setdefault(vs_uuid, VsRuntime())
                runtime.history.append({
                    "time": now, "primary": new.active[0] if new.active else None,
                    "active": list(new.active), "standby": new.standby,
                    "previous": list(old.active) if old else []})
                LOG.info("virtual service %s placed on %s%s", names.get(vs_uuid, vs_uuid),
                         ", ".join(new.active), f" (standby {new.standby})" if new.standby else "")

    # SEs ---------------------------------------------------------------------------------

    def _driver_for(self, snap, group_uuid: str) -> CloudDriver | None:
        group = snap["serviceenginegroup"].get(group_uuid)
        cloud_uuid = group.body.get("cloud_ref") if group else None
        cloud = snap["cloud"].get(cloud_uuid) if cloud_uuid else None
        if cloud is None:
            return None
        driver = self.drivers.get(cloud.uuid)
        if driver is None:
            driver = self.drivers[cloud.uuid] = self.make_driver(cloud)
        return driver

    def make_driver(self, cloud: StoredObject) -> CloudDriver:
        vtype = cloud.body.get("vtype", "CLOUD_NONE")
        cls = self.driver_classes.get(vtype)
        if cls is None:
            raise CloudError(f"cloud '{cloud.name}' has vtype {vtype}, which no installed "
                             f"driver serves (installed: {', '.join(sorted(self.driver_classes))})")
        body = copy.deepcopy(cloud.body)
        # drivers need their credentials (passwords, SSH keys) in the clear
        for path, value in self.secrets_of(cloud).items():
            set_path(body, path, value)
        return cls({**body, "uuid": cloud.uuid, "name": cloud.name}, conf=self.conf,
                   state_path=self.conf.state_path)

    def load_drivers(self) -> None:
        """Create the driver of every configured cloud now, so that a cloud whose driver is
        missing or broken shows at start (logged, and CLOUD_STATE_FAILED with the reason in
        its runtime) rather than at the first virtual service. The controller runs on: the
        other clouds, and the API to fix this one, stay available."""
        with self.store.begin() as tx:
            _, clouds = tx.list("cloud", None, limit=None)
        for cloud in clouds:
            try:
                self.drivers[cloud.uuid] = self.make_driver(cloud)
            except CloudError as exc:
                LOG.error("cloud %s: %s", cloud.name, exc.reason)

    async def _scale(self, snap, groups, result: placement.PlacementResult, now: float) -> None:
        for group_uuid, count in result.create.items():
            group = groups[group_uuid]
            members = [r for r in self.ses.values() if r.group == group_uuid]
            room = group.max_se - len(members)
            # replace dead SEs first: they count against max_se until deleted (an SE whose
            # create call still runs is left to it: the call is bounded by the driver)
            for record in [r for r in members if r.uuid not in self._creating and (
                           r.state in ("down", "failed")
                           or (r.state == "creating" and now - r.created_at >=
                               self.conf.controlplane.se_create_timeout))]:
                await self._delete_se(snap, record, "replaced: " + (record.reason or record.state))
                room += 1
            for _ in range(max(0, min(count, room))):
                await self._create_se(snap, group_uuid, group)
        # idle SEs go after the group's deprovision delay (buffer SEs are not idle)
        for se_uuid in result.idle:
            record = self.ses.get(se_uuid)
            if record is None:
                continue
            group = groups.get(record.group)
            if record.state in ("down", "failed") and not self.semanager.is_alive(se_uuid):
                if now - record.created_at > self.conf.controlplane.se_create_timeout:
                    await self._delete_se(snap, record, "down and idle")
                continue
            wanted = _buffer_needed(group, result, self.ses) if group else 0
            if wanted > 0:
                record.idle_since = None
                continue
            record.idle_since = record.idle_since or now
            delay = (group.deprovision_delay if group else 120) * 60
            if now - record.idle_since >= delay:
                await self._delete_se(snap, record, "idle")
        for record in self.ses.values():
            if record.uuid not in result.idle:
                record.idle_since = None

    async def _create_se(self, snap, group_uuid: str, group: placement.GroupSpec) -> None:
        try:
            driver = self._driver_for(snap, group_uuid)
        except CloudError as exc:
            LOG.error("SE group %s: %s", group.name, exc.reason)
            return
        if driver is None:
            LOG.error("SE group %s: no cloud driver for its cloud", group.name)
            return
        index = 1
        taken = {r.name for r in self.ses.values()}
        prefix = snap["serviceenginegroup"][group_uuid].body.get("se_name_prefix") or "vantage"
        while f"{prefix}-{group.name}-se-{index}" in taken:
            index += 1
        name = f"{prefix}-{group.name}-se-{index}"
        group_obj = snap["serviceenginegroup"][group_uuid]
        mgmt_network = snap["network"].get(group_obj.body.get("mgmt_network_ref") or "")
        problem = None
        try:
            mgmt = self._se_mgmt_address(snap, group_obj)
        except ipam.IpamError as exc:
            mgmt, problem = None, exc.reason
            if self._se_ip_logged.get(group_uuid) != problem:
                LOG.error("SE group %s: %s", group.name, problem)
            self._se_ip_logged[group_uuid] = problem
        else:
            self._se_ip_logged.pop(group_uuid, None)
        obj = await asyncio.to_thread(self._store_se, name, group_uuid, group_obj, mgmt,
                                      mgmt_network)
        # later allocations of this pass (SEs, VIPs) must see this SE's address
        snap["serviceengine"][obj.uuid] = obj
        record = SeRecord(obj.uuid, name, group_uuid, created_at=time.time())
        self.ses[obj.uuid] = record
        if problem is not None:
            record.state, record.reason = "failed", problem
            return
        token, expires = self.credentials.issue_token(obj.uuid)
        body = group_obj.body
        cloud = snap["cloud"].get(body.get("cloud_ref") or "")
        # the SE starts with an interface in every network its group's VIPs use (those
        # placed and those waiting for it), where its cloud makes them at create; what a
        # VIP on it needs is still confirmed with an (idempotent) attach_network before
        # the VIP is plumbed, as not every driver wires data networks at create
        data = self._group_data_networks(snap, group_obj)
        spec = SeSpec(se_uuid=obj.uuid, name=name, se_group=group.name,
                      vcpus=body.get("vcpus_per_se", 1), memory_mb=body.get("memory_per_se", 2048),
                      disk_gb=body.get("disk_per_se", 15),
                      mgmt_network=(_cloud_network_id(cloud, mgmt_network)
                                    if mgmt_network else None),
                      mgmt_ip=mgmt[0] if mgmt else None, mgmt_gateway=mgmt[1] if mgmt else None,
                      data_networks=tuple(data), extra=_se_extra(body),
                      bootstrap=Bootstrap(self.controller_url, obj.uuid, token,
                                          self.controller_ca, expires))
        # in the background: a cloud that takes minutes (an SE package built and copied, a VM
        # cloned) holds neither the loop nor the other virtual services; the SE counts as
        # pending meanwhile, and the call's own retries bound it
        self._creating[obj.uuid] = asyncio.get_running_loop().create_task(
            self._run_create(driver, spec, record))

    async def _run_create(self, driver: CloudDriver, spec: SeSpec, record: SeRecord) -> None:
        cloud_uuid = str(driver.cloud.get("uuid") or "")
        try:
            info = await asyncio.to_thread(driver.create_se, spec)
        except CloudError as exc:
            record.state, record.reason = "failed", exc.reason
            LOG.error("SE %s could not be created: %s", spec.name, exc.reason)
        except Exception as exc:  # a driver bug fails this SE, not the controller
            LOG.exception("SE %s could not be created", spec.name)
            record.state, record.reason = "failed", f"{type(exc).__name__}: {exc}"
        else:
            LOG.info("created SE %s (%s): %s", spec.name, spec.se_uuid, info.state.value)
            # se_create_timeout is the time to register once the cloud made the SE
            record.created_at = time.time()
            self.se_create_failures.pop(cloud_uuid, None)
        finally:
            self._creating.pop(spec.se_uuid, None)
            self.wake()
        if record.state == "failed":
            # the cloud runtime shows why its last SE create failed (quota, image, host...)
            self.se_create_failures[cloud_uuid] = {
                "se_name": spec.name, "reason": record.reason, "time": time.time()}

    def _se_data_addresses(self) -> set[str]:
        """Addresses the clouds gave SEs in their data networks (attach_network)."""
        # copies: this runs in the allocation thread while attach calls finish on the loop
        return {entry["address"] for networks in list(self.se_networks.values())
                for entry in list(networks.values()) if entry.get("address")}

    def _se_mgmt_address(self, snap, group: StoredObject) -> tuple[str, str | None] | None:
        """A static management address ("10.0.0.20/24") and gateway for a new SE of `group`,
        when its management network (`mgmt_network_ref`) has DHCP off; None means DHCP.

        :raises ipam.IpamError: the network is missing, has no SE range, or none is free.
        """
        ref = group.body.get("mgmt_network_ref")
        if not ref:
            return None
        network = snap["network"].get(ref)
        if network is None:
            raise ipam.IpamError(f"mgmt_network_ref: network {ref} does not exist")
        if network.body.get("dhcp_enabled", True):
            return None
        candidates = ipam.ranges(network, ipam.SE_RANGE_TYPES)
        if not candidates:
            raise ipam.IpamError(
                f"management network {network.name!r} has dhcp_enabled false and no static "
                "range for SEs: add configured_subnets[].static_ip_ranges of type "
                "STATIC_IPS_FOR_SE (or STATIC_IPS_FOR_VIP_AND_SE), or enable DHCP")
        found = ipam.first_free(candidates,
                                self._addresses_in_use(snap) | self._se_data_addresses())
        if found is None:
            raise ipam.IpamError(
                f"no free address in the SE ranges of management network {network.name!r} "
                f"({_ranges_text(candidates)}): every address is used by an SE or a VIP; "
                "add a range")
        address, prefix = found
        return f"{address}/{prefix.prefixlen}", ipam.gateway(network, address)

    def _store_se(self, name: str, group_uuid: str, group: StoredObject,
                  mgmt: tuple[str, str | None] | None = None,
                  mgmt_network: StoredObject | None = None) -> StoredObject:
        from vantage.controller.objects import new_uuid
        body = {"name": name, "se_group_ref": group_uuid,
                "cloud_ref": group.body.get("cloud_ref"), "controller_created": True}
        if mgmt is not None and mgmt_network is not None:
            # recorded on the SE, so VIP and SE allocations never hand the address out again
            ip, _, mask = mgmt[0].partition("/")
            body["mgmt_ip_address"] = {"addr": ip, "type": _ip_type(ip)}
            body["mgmt_vnic"] = {"network_ref": mgmt_network.uuid, "vnic_networks": [
                {"ip": {"ip_addr": {"addr": ip, "type": _ip_type(ip)}, "mask": int(mask)},
                 "mode": "STATIC"}]}
        obj = StoredObject(uuid=new_uuid("serviceengine"), kind="serviceengine",
                           tenant=group.tenant, name=name, body=body)
        refs = [("se_group_ref", group_uuid)]
        if body["cloud_ref"]:
            refs.append(("cloud_ref", body["cloud_ref"]))
        if "mgmt_vnic" in body:
            refs.append(("mgmt_vnic.network_ref", body["mgmt_vnic"]["network_ref"]))
        with self.store.begin(write=True) as tx:
            return tx.insert(obj, refs)

    async def _delete_se(self, snap, record: SeRecord, why: str) -> None:
        if record.uuid in self._creating:
            return  # its create call still runs: deleted on a pass after it returns
        try:
            driver = self._driver_for(snap, record.group)
        except CloudError:
            driver = None
        LOG.info("deleting SE %s (%s): %s", record.name, record.uuid, why)
        if driver is not None:
            try:
                await asyncio.to_thread(driver.delete_se, record.uuid)
            except CloudError as exc:
                record.reason = f"delete failed: {exc.reason}"
                LOG.error("SE %s could not be deleted: %s", record.name, exc.reason)
                return
        session = self.semanager.sessions.get(record.uuid)
        if session is not None:
            await session.channel.close(4001)
        self.credentials.forget(record.uuid)
        self.ses.pop(record.uuid, None)
        # its interfaces went with it
        if self.se_networks.pop(record.uuid, None) is not None:
            self._save_se_networks()
        await asyncio.to_thread(self._forget_se, record.uuid)

    def _forget_se(self, se_uuid: str) -> None:
        with self.store.begin(write=True) as tx:
            if tx.get(se_uuid) is not None:
                tx.delete(se_uuid)

    async def _on_se_connect(self, se_uuid: str) -> None:
        record = self.ses.get(se_uuid)
        if record is not None:
            record.state, record.reason = "up", None
        entry = self.se_docs.get(se_uuid)
        session = self.semanager.sessions.get(se_uuid)
        if entry is not None and session is not None and session.applied_version != entry[0]:
            await self.semanager.push(se_uuid, entry[0], entry[1])
        self.wake()

    async def _on_se_disconnect(self, se_uuid: str) -> None:
        """A channel closed. If the cloud says the SE is no longer running, fail over now;
        otherwise (controller or network trouble) the heartbeat timeout decides."""
        record = self.ses.get(se_uuid)
        if record is None or self.stopping:
            return
        try:
            snap_group = record.group
            with self.store.begin() as tx:
                group = tx.get(snap_group)
                cloud = tx.get(group.body.get("cloud_ref")) if group else None
            driver = self.drivers.get(cloud.uuid) if cloud else None
            if driver is None:
                return
            info = await asyncio.to_thread(driver.get_se, se_uuid)
        except (CloudError, OSError) as exc:
            LOG.debug("cannot ask the cloud about SE %s: %s", se_uuid, exc)
            return
        if info.state not in (SeState.RUNNING, SeState.CREATING):
            LOG.warning("SE %s (%s) is gone (%s): failing over now", record.name, se_uuid,
                        info.reason or info.state.value)
            self.semanager.declare_down(se_uuid)
            record.state, record.reason = "down", info.reason or info.state.value
            self.wake()

    def _on_ack(self, se_uuid: str, message: dict[str, Any]) -> None:
        if not message.get("ok"):
            LOG.error("SE %s rejected configuration %s: %s", se_uuid, message.get("version"),
                      message.get("error"))
            self.se_rejections[se_uuid] = {"version": str(message.get("version")),
                                           "error": str(message.get("error"))}
        else:
            self.se_rejections.pop(se_uuid, None)
        self.wake()

    def _on_se_message(self, se_uuid: str, message: dict[str, Any]) -> None:
        if message.get("type") == "metrics":
            self.latest_metrics[se_uuid] = message
        for sink in self.analytics_sinks:
            try:
                sink(se_uuid, message)
            except Exception:
                LOG.exception("analytics sink failed")

    # VIPs ----------------------------------------------------------------------------------

    #: allocate_vip calls of one pass running at once (each in a thread)
    VIP_ALLOCATIONS_AT_ONCE = 8

    def _allocate_vips(self, snap, *, prefetch: bool = True) -> None:
        """Give every VIP of every vsvip its address, in the vsvip's cloud (`cloud_ref`, else
        the default cloud): the cloud's own IPAM when its driver has one (allocate_vip), else
        the static VIP ranges of the VIP's `network` (the local cloud: its VIP range when the
        VIP names no network). A user-given address is checked against its network's
        subnets. What a driver reserved is released when its VIP or vsvip goes. Problems
        are kept per vsvip for the virtual services' runtime and logged once.

        New reservations in a cloud with an IPAM are not asked for one after the other (a
        slow Neutron times many VIPs would hold the pass): a first round collects them, they
        run at once in a bounded pool, and a second round takes their answers."""
        used = self._addresses_in_use(snap)
        # an address recorded for a VIP whose body does not show it yet is taken too
        used |= {r["address"] for r in self.vip_allocations.values() if r.get("address")}
        used |= self._se_data_addresses()
        pending: dict[str, tuple[CloudDriver, VipRequest]] | None = {} if prefetch else None
        default_cloud = self._default_cloud(snap)
        problems: dict[str, list[str]] = {}
        withheld: set[tuple[str, str]] = set()
        seen: set[str] = set()
        before = json.dumps(self.vip_allocations, sort_keys=True)
        for key, record in list(self.vip_allocations.items()):
            vsvip_uuid, _, vip_id = key.partition("/")
            vsvip = snap["vsvip"].get(vsvip_uuid)
            if vsvip is None or vip_id not in {str(v.get("vip_id", "0"))
                                               for v in vsvip.body.get("vip", [])}:
                seen.add(key)
                problem = self._release_vip(snap, record)
                self._note_vip_problem(key, vsvip.name if vsvip else vsvip_uuid, problem)
                if problem is None:
                    del self.vip_allocations[key]
        for uuid, vsvip in snap["vsvip"].items():
            cloud = snap["cloud"].get(vsvip.body.get("cloud_ref") or "") or default_cloud
            body = copy.deepcopy(vsvip.body)
            changed = waiting = False
            for index, vip in enumerate(body.get("vip", [])):
                key = f"{uuid}/{vip.get('vip_id', '0')}"
                seen.add(key)
                try:
                    if cloud is None:
                        raise ipam.IpamError("cloud_ref: the vsvip has no cloud, and there is "
                                             "no Default-Cloud")
                    changed |= self._allocate_vip(snap, cloud, vsvip, index, vip, used,
                                                  pending)
                    problem = None
                except _AllocationPending:
                    # asked for below; the second round writes this vsvip
                    withheld.add((uuid, str(vip.get("vip_id", "0"))))
                    waiting = True
                    continue
                except ipam.IpamError as exc:
                    problem = exc.reason
                except CloudError as exc:
                    problem = f"vip[{index}]: cloud {cloud.name!r}: {exc.reason}"
                self._note_vip_problem(key, vsvip.name, problem)
                if problem is not None:
                    problems.setdefault(uuid, []).append(f"vsvip {vsvip.name!r} {problem}")
                    withheld.add((uuid, str(vip.get("vip_id", "0"))))
            if changed and not waiting:
                self._write_vsvip(vsvip, body)
        for key in set(self._vip_logged) - seen:
            del self._vip_logged[key]
        self.vip_problems, self.vip_withheld = problems, withheld
        if json.dumps(self.vip_allocations, sort_keys=True) != before:
            self._save_vip_allocations()
        if pending:
            self._prefetch_vip_allocations(pending)
            self._allocate_vips(snap, prefetch=False)
            self._vip_prefetched.clear()  # an answer is for this pass only

    def _prefetch_vip_allocations(self, pending: dict[str, tuple[CloudDriver, VipRequest]]
                                  ) -> None:
        """Run the drivers' allocate_vip calls at once, in a bounded pool; each answer (or
        CloudError) waits in `_vip_prefetched` for the allocation that asked for it."""
        def call(driver: CloudDriver, request: VipRequest) -> Any:
            try:
                return driver.allocate_vip(request)
            except CloudError as exc:
                return exc
        workers = min(self.VIP_ALLOCATIONS_AT_ONCE, len(pending))
        with concurrent.futures.ThreadPoolExecutor(workers, "vantage-vip") as pool:
            futures = {key: pool.submit(call, driver, request)
                       for key, (driver, request) in pending.items()}
        for key, future in futures.items():
            self._vip_prefetched[key] = (pending[key][1], future.result())

    def _cloud_allocation(self, key: str, driver: CloudDriver, request: VipRequest,
                          pending: dict[str, tuple[CloudDriver, VipRequest]] | None):
        """driver.allocate_vip(request): its answer from the pass's pool, or, in the first
        round, a place in that pool (_AllocationPending).

        :raises CloudError: from the driver.
        """
        if type(driver).allocate_vip is CloudDriver.allocate_vip:
            return None  # no IPAM of its own: nothing to wait for
        done = self._vip_prefetched.pop(key, None)
        if done is not None and done[0] == request:
            if isinstance(done[1], CloudError):
                raise done[1]
            return done[1]
        if pending is None:
            return driver.allocate_vip(request)
        pending[key] = (driver, request)
        raise _AllocationPending(key)

    def _allocate_vip(self, snap, cloud: StoredObject, vsvip: StoredObject, index: int,
                      vip: dict[str, Any], used: set[str],
                      pending: dict[str, tuple[CloudDriver, VipRequest]] | None = None) -> bool:
        """Allocate (or check) one VIP, changing `vip` in place; True if it changed.

        :raises ipam.IpamError: naming the VIP field to fix.
        :raises CloudError: from the cloud's driver.
        :raises _AllocationPending: the driver's answer comes from the pass's pool.
        """
        vip_id = str(vip.get("vip_id", "0"))
        key = f"{vsvip.uuid}/{vip_id}"
        record = self.vip_allocations.get(key)
        address = (vip.get("ip_address") or {}).get("addr")
        floating = (vip.get("floating_ip") or {}).get("addr")
        # an address this controller allocated is not the user's: the request stays as it was
        wanted = record["request"]["address"] if record and address == record.get("address") \
            else address
        wanted_floating = record["request"]["floating_address"] \
            if record and floating == record.get("floating_address") else floating
        network_ref = vip.get("network_ref")
        network = snap["network"].get(network_ref) if network_ref else None
        if network_ref and network is None:
            raise ipam.IpamError(f"vip[{index}].network_ref: network {network_ref} does not "
                                 "exist")
        request = VipRequest(vsvip_uuid=vsvip.uuid, vip_id=vip_id, name=vsvip.name,
                             network=(network.body.get("external_uuid") if network else None),
                             subnet=vip.get("subnet_uuid"), address=wanted,
                             floating_ip=bool(vip.get("auto_allocate_floating_ip")),
                             floating_address=wanted_floating)
        changed = False
        if record is not None and (record["cloud"] != cloud.uuid
                                   or record["request"] != dataclasses.asdict(request)
                                   or record.get("network_ref") != network_ref):
            # the VIP moved to another cloud or network, or asks for something else: release
            # what was allocated, then allocate anew
            problem = self._release_vip(snap, record)
            if problem is not None:
                raise ipam.IpamError(f"vip[{index}]: {problem}")
            del self.vip_allocations[key]
            if wanted is None and address is not None:
                vip.pop("ip_address", None)
                address, changed = None, True
            if wanted_floating is None and floating is not None:
                vip.pop("floating_ip", None)
                changed = True
            record = None
        driver = self._cloud_driver(cloud)
        if record is not None:
            # allocated before: the body shows it (a write lost to a concurrent change is
            # made again), and a user's address still fits its network
            if record.get("address") and address != record["address"]:
                vip["ip_address"] = {"addr": record["address"],
                                     "type": _ip_type(record["address"])}
                changed = True
            if record.get("floating_address") and floating != record["floating_address"]:
                vip["floating_ip"] = {"addr": record["floating_address"],
                                      "type": _ip_type(record["floating_address"])}
                changed = True
            if not record.get("driver") and wanted:
                self._check_vip_address(snap, cloud, index, vip, wanted)
            return changed
        allocation = self._cloud_allocation(key, driver, request, pending)
        entry = {"cloud": cloud.uuid, "request": dataclasses.asdict(request),
                 "network_ref": network_ref, "driver": allocation is not None}
        if allocation is not None:
            entry.update(address=allocation.address,
                         floating_address=allocation.floating_address,
                         external_id=allocation.external_id)
            # recorded before the body is written: what the cloud reserved is released even
            # if this vsvip goes before its write lands
            self.vip_allocations[key] = entry
            vip["ip_address"] = {"addr": allocation.address,
                                 "type": _ip_type(allocation.address)}
            if wanted is None:
                vip["auto_allocate_ip"] = True
            if allocation.floating_address:
                vip["floating_ip"] = {"addr": allocation.floating_address,
                                      "type": _ip_type(allocation.floating_address)}
            used.add(allocation.address)
            LOG.info("vsvip %s: cloud %s reserved VIP %s%s", vsvip.name, cloud.name,
                     allocation.address, f" (floating IP {allocation.floating_address})"
                     if allocation.floating_address else "")
            return True
        if wanted:
            self._check_vip_address(snap, cloud, index, vip, wanted)
            self.vip_allocations[key] = {**entry, "address": wanted}
            return changed
        address, where = self._static_vip_address(snap, cloud, index, vip, used)
        self.vip_allocations[key] = {**entry, "address": address}
        vip["ip_address"] = {"addr": address, "type": _ip_type(address)}
        vip["auto_allocate_ip"] = True
        used.add(address)
        LOG.info("vsvip %s: allocated VIP %s from %s", vsvip.name, address, where)
        return True

    def _cloud_networks(self, snap, cloud: StoredObject) -> list[StoredObject]:
        default = self._default_cloud(snap)
        return [n for n in snap["network"].values()
                if (n.body.get("cloud_ref") or (default.uuid if default else None)) == cloud.uuid]

    def _static_vip_address(self, snap, cloud: StoredObject, index: int, vip: dict[str, Any],
                            used: set[str]) -> tuple[str, str]:
        """A free address for a VIP of a cloud without IPAM, and where it came from.

        :raises ipam.IpamError:
        """
        local = cloud.body.get("vtype", "CLOUD_NONE") == "CLOUD_NONE"
        if local and not vip.get("network_ref") and not vip.get("subnet_uuid"):
            # the local cloud's range: loopback in process mode, the bridge network in netns
            net = ipaddress.ip_network(vip_network(self.conf))
            found = ipam.first_free([(net.network_address, net.broadcast_address, net)], used)
            if found is None:
                raise ipam.IpamError(f"vip[{index}]: no free VIP in {net} (the local cloud's "
                                     "VIP range): every address is in use")
            return found[0], str(net)
        network, subnet = ipam.vip_network(vip, index, cloud.name, snap["network"],
                                           self._cloud_networks(snap, cloud), required=True)
        candidates = ipam.ranges(network, ipam.VIP_RANGE_TYPES, subnet=subnet)
        where = f"network {network.name!r}" + (f" subnet {subnet}" if subnet else "")
        if not candidates:
            raise ipam.IpamError(f"vip[{index}]: {where} has no static VIP range: add "
                                 "configured_subnets[].static_ip_ranges of type "
                                 "STATIC_IPS_FOR_VIP (or STATIC_IPS_FOR_VIP_AND_SE), or give "
                                 "the VIP an ip_address")
        found = ipam.first_free(candidates, used)
        if found is None:
            raise ipam.IpamError(f"vip[{index}]: no free address in the static VIP ranges of "
                                 f"{where} ({_ranges_text(candidates)}): every address is "
                                 "used by a VIP or an SE; add a range or free a VIP")
        return found[0], where

    def _check_vip_address(self, snap, cloud: StoredObject, index: int, vip: dict[str, Any],
                           address: str) -> None:
        """:raises ipam.IpamError: the user's address is outside its network's subnets."""
        local = cloud.body.get("vtype", "CLOUD_NONE") == "CLOUD_NONE"
        if local and not vip.get("network_ref") and not vip.get("subnet_uuid"):
            return  # the local cloud serves any address its host routes
        networks = self._cloud_networks(snap, cloud)
        network, _ = ipam.vip_network(vip, index, cloud.name, snap["network"], networks,
                                      required=False)
        problem = ipam.check_address(address, index, network, cloud.name, networks)
        if problem is not None:
            raise ipam.IpamError(problem)

    def _release_vip(self, snap, record: dict[str, Any]) -> str | None:
        """Release what a cloud's driver reserved for a VIP; the problem, or None."""
        if not record.get("driver"):
            return None
        cloud = snap["cloud"].get(record["cloud"])
        try:
            driver = self.drivers.get(record["cloud"]) or (
                self._cloud_driver(cloud) if cloud is not None else None)
            if driver is None:
                LOG.warning("VIP %s: cloud %s is gone; nothing to release it in",
                            record.get("address"), record["cloud"])
                return None
            driver.release_vip(VipRequest(**record["request"]))
        except CloudError as exc:
            return f"releasing VIP {record.get('address')} failed: {exc.reason}"
        LOG.info("released VIP %s (vsvip %s, vip_id %s)", record.get("address"),
                 record["request"]["name"], record["request"]["vip_id"])
        return None

    def _note_vip_problem(self, key: str, vsvip_name: str, problem: str | None) -> None:
        if problem is None:
            if self._vip_logged.pop(key, None) is not None:
                LOG.info("vsvip %s: VIP %s is fine again", vsvip_name, key.partition("/")[2])
            return
        if self._vip_logged.get(key) != problem:
            LOG.error("vsvip %s: %s", vsvip_name, problem)
        self._vip_logged[key] = problem

    def _write_vsvip(self, vsvip: StoredObject, body: dict[str, Any]) -> None:
        with self.store.begin(write=True) as tx:
            current = tx.get(vsvip.uuid)
            if current is None or current.last_modified != vsvip.last_modified:
                return  # deleted or changed since the snapshot: the next pass sees to it
            current.body = body
            tx.update(current, None, current.last_modified)
        vsvip.body = body

    def _cloud_driver(self, cloud: StoredObject) -> CloudDriver:
        driver = self.drivers.get(cloud.uuid)
        if driver is None:
            driver = self.drivers[cloud.uuid] = self.make_driver(cloud)
        return driver

    @staticmethod
    def _default_cloud(snap) -> StoredObject | None:
        clouds = snap["cloud"].values()
        return next((c for c in clouds if c.name == "Default-Cloud"), None) or next(
            (c for c in clouds if c.body.get("vtype", "CLOUD_NONE") == "CLOUD_NONE"), None)

    @staticmethod
    def _addresses_in_use(snap) -> set[str]:
        """Every VIP address and every SE address (management and data)."""
        used = set()
        for vsvip in snap["vsvip"].values():
            for vip in vsvip.body.get("vip", []):
                for field in ("ip_address", "floating_ip"):
                    if (vip.get(field) or {}).get("addr"):
                        used.add(vip[field]["addr"])
        for se in snap["serviceengine"].values():
            used |= _refs_named(se.body, "addr")
        return used

    def _load_vip_allocations(self) -> dict[str, dict[str, Any]]:
        try:
            saved = json.loads(self.vip_allocations_file.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(saved, dict):
            return {}
        return {k: v for k, v in saved.items()
                if isinstance(v, dict) and isinstance(v.get("request"), dict) and "cloud" in v}

    def _save_vip_allocations(self) -> None:
        tmp = self.vip_allocations_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.vip_allocations, sort_keys=True))
        tmp.replace(self.vip_allocations_file)

    def _return_path(self, snap, vs: StoredObject) -> ReturnPath | None:
        """The return path of a virtual service: its SE group's cloud's, unless the group's
        se_tunnel_mode says otherwise; None when the cloud has no usable driver."""
        group = snap["serviceenginegroup"].get(self._vs_group(snap, vs) or "")
        if group is None:
            return None
        try:
            driver = self._driver_for(snap, group.uuid)
        except CloudError:
            return None
        if driver is None:
            return None
        return placement.return_path(driver.return_path(), group.body.get("se_tunnel_mode", 0))

    @staticmethod
    def _vs_group(snap, vs: StoredObject) -> str | None:
        return vs.body.get("se_group_ref") or next(
            (u for u, o in snap["serviceenginegroup"].items() if o.name == "Default-Group"), None)

    async def _plumb_vips(self, snap, result: placement.PlacementResult) -> None:
        """Make every placed VIP reach the SEs the cloud's return path says
        (placement.vip_holders): with an asymmetric one, the primary owns it and answers ARP
        and secondaries hold it without ARP; with a symmetric one, only the primary holds it.
        Only changes reach the driver (`self.plumbed` remembers what it did); removals go
        first so a moved VIP is not held by two SEs at once; a failed call is retried next
        pass, and an SE whose create call still runs is plumbed once it returns.

        A VIP is plumbed on an SE only once the SE has an interface in the VIP's network
        (Neutron allowed-address-pairs live on the port in that network): the networks of
        the virtual services placed on an SE are attached (_wire_networks) and those no VIP
        on it needs any more are detached, after their VIPs were unplumbed."""
        wanted: dict[tuple[str, str], bool] = {}
        #: (SE uuid, VIP) -> the cloud network ID the VIP needs on that SE
        vip_networks: dict[tuple[str, str], str] = {}
        #: SE uuid -> cloud network ID -> network: the networks of the VIPs of the virtual
        #: services placed on the SE (a standby too: it takes over without an attach)
        needed: dict[str, dict[str, StoredObject]] = {}
        vs_networks: dict[str, set[str]] = {}
        for vs_uuid, where in result.placements.items():
            vs = snap["virtualservice"].get(vs_uuid)
            vsvip = snap["vsvip"].get(vs.body.get("vsvip_ref") or "") if vs else None
            if vsvip is None:
                continue
            group = snap["serviceenginegroup"].get(self._vs_group(snap, vs) or "")
            holders = placement.vip_holders(where, self._return_path(snap, vs)
                                            or ReturnPath.ASYMMETRIC)
            placed_on = (*where.active, *([where.standby] if where.standby else []))
            for index, vip in enumerate(vsvip.body.get("vip", [])):
                addr = (vip.get("ip_address") or {}).get("addr")
                if not addr or not vip.get("enabled", True) or \
                        (vsvip.uuid, str(vip.get("vip_id", "0"))) in self.vip_withheld:
                    continue
                found = self._vip_network(snap, group, vsvip, index, vip) if group else None
                if found is not None:
                    vs_networks.setdefault(vs_uuid, set()).add(found[0])
                    for se_uuid in placed_on:
                        needed.setdefault(se_uuid, {})[found[0]] = found[1]
                for se_uuid, primary in holders.items():
                    wanted[(se_uuid, addr)] = wanted.get((se_uuid, addr), False) or primary
                    if found is not None:
                        vip_networks[(se_uuid, addr)] = found[0]
        self._vs_networks = vs_networks
        removals = [key for key in self.plumbed if key not in wanted]
        if removals:
            await asyncio.gather(*(self._plumb_vip(snap, key, None) for key in removals))
        self._wire_networks(snap, result, needed)
        changes = [(key, primary) for key, primary in wanted.items()
                   if self.plumbed.get(key) != primary and key[0] not in self._creating
                   and self._has_network(key[0], vip_networks.get(key))]
        if changes:
            await asyncio.gather(*(self._plumb_vip(snap, key, primary, vip_networks.get(key))
                                   for key, primary in changes))

    async def _plumb_vip(self, snap, key: tuple[str, str], primary: bool | None,
                         network: str | None = None) -> None:
        """plumb_vip (primary True/False) or unplumb_vip (None) of one VIP on one SE;
        `network` is the cloud network ID of the VIP, when known."""
        se_uuid, vip = key
        record = self.ses.get(se_uuid)
        if record is None:  # the SE was deleted, and its plumbing with it
            self.plumbed.pop(key, None)
            self._plumbed_network.pop(key, None)
            return
        try:
            driver = self._driver_for(snap, record.group)
            if driver is not None and primary is None:
                await asyncio.to_thread(driver.unplumb_vip, se_uuid, vip)
            elif driver is not None:
                await asyncio.to_thread(driver.plumb_vip, se_uuid, vip, primary=primary)
        except (CloudError, OSError) as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            if self._plumb_errors.get(key) != reason:
                LOG.error("VIP %s on SE %s: %s failed: %s", vip, record.name,
                          "unplumb" if primary is None else "plumb", reason)
            self._plumb_errors[key] = reason
            return
        self._plumb_errors.pop(key, None)
        if primary is None:
            self.plumbed.pop(key, None)
            self._plumbed_network.pop(key, None)
        else:
            self.plumbed[key] = primary
            if network is not None:
                self._plumbed_network[key] = network
            LOG.info("VIP %s plumbed on SE %s (%s)", vip, record.name,
                     "primary" if primary else "secondary")

    # data networks -------------------------------------------------------------------------

    #: attach_network/detach_network calls running at once (each in a thread)
    NETWORK_CALLS_AT_ONCE = 8
    #: seconds after which a call still running shows as a problem on the runtime; it keeps
    #: running (the driver's own retries bound it) and nothing else is asked of that network
    NETWORK_CALL_TIMEOUT = 120.0
    #: seconds before a failed attach or detach is tried again, doubled on each failure in a
    #: row up to NETWORK_RETRY_MAX (a network that does not exist is not asked for every pass)
    NETWORK_RETRY_DELAY = 5.0
    NETWORK_RETRY_MAX = 300.0

    def _vip_network(self, snap, group: StoredObject, vsvip: StoredObject, index: int,
                     vip: dict[str, Any]) -> tuple[str, StoredObject] | None:
        """(cloud network ID, network) of a VIP, for the SEs of `group`: its `network_ref`;
        else the network of the group's cloud whose configured subnet `subnet_uuid` names;
        else the only one with a configured subnet holding the address; else the cloud's
        only network with static VIP ranges. None when none is known, when it is not in the
        group's cloud, or when it is the SEs' management network (every SE has that)."""
        cloud = snap["cloud"].get(group.body.get("cloud_ref") or "") or \
            self._default_cloud(snap)
        if cloud is None:
            return None
        networks = self._cloud_networks(snap, cloud)
        network = snap["network"].get(vip.get("network_ref") or "")
        address = (vip.get("ip_address") or {}).get("addr")
        if network is None and address and not vip.get("subnet_uuid"):
            ip = ipaddress.ip_address(address)
            holding = [n for n in networks if any(ip in s for s in ipam.subnets(n))]
            network = holding[0] if len(holding) == 1 else None
        if network is None and not vip.get("network_ref"):
            try:
                network, _ = ipam.vip_network(vip, index, cloud.name, snap["network"],
                                              networks, required=False)
            except ipam.IpamError:
                network = None  # the VIP's allocation says why
        if network is None or network.uuid not in {n.uuid for n in networks}:
            return None
        mgmt_ref = group.body.get("mgmt_network_ref")
        configured = _configured_mgmt_network(cloud)
        if (network.uuid == mgmt_ref if mgmt_ref else configured is not None and
                configured in (network.name, network.body.get("external_uuid"))):
            return None
        return _cloud_network_id(cloud, network), network

    def _group_data_networks(self, snap, group: StoredObject) -> dict[str, StoredObject]:
        """Cloud network ID -> network of every VIP of the group's enabled virtual services
        (placed or waiting for SEs), but the management network."""
        found: dict[str, StoredObject] = {}
        for vs in snap["virtualservice"].values():
            if not vs.body.get("enabled", True) or self._vs_group(snap, vs) != group.uuid:
                continue
            vsvip = snap["vsvip"].get(vs.body.get("vsvip_ref") or "")
            for index, vip in enumerate(vsvip.body.get("vip", []) if vsvip else []):
                if not vip.get("enabled", True):
                    continue
                hit = self._vip_network(snap, group, vsvip, index, vip)
                if hit is not None:
                    found[hit[0]] = hit[1]
        return dict(sorted(found.items()))

    def _has_network(self, se_uuid: str, network: str | None) -> bool:
        return network is None or network in self.se_networks.get(se_uuid, {})

    def _wire_networks(self, snap, result: placement.PlacementResult,
                       needed: dict[str, dict[str, StoredObject]]) -> None:
        """Start attach_network for every network an SE needs and lacks, and detach_network
        for every one no VIP on it needs any more and whose VIPs are unplumbed, in the
        background (a Nova interface attach takes seconds: it holds neither the loop nor
        other SEs). An SE with nothing placed on it (N+M buffer) keeps the interfaces its
        group's VIPs use. A failure is kept for the runtimes and retried after a backoff."""
        changed = False
        for se_uuid in [se for se in self.se_networks if se not in self.ses]:
            del self.se_networks[se_uuid]
            changed = True
        placed = {se for p in result.placements.values()
                  for se in (*p.active, *([p.standby] if p.standby else []))}
        plumbed_in = {(key[0], net) for key, net in self._plumbed_network.items()
                      if key in self.plumbed}
        group_networks: dict[str, set[str]] = {}
        for se_uuid, record in list(self.ses.items()):
            if se_uuid in self._creating or record.state == "failed":
                continue
            has = self.se_networks.get(se_uuid, {})
            want = needed.get(se_uuid, {})
            keep: set[str] = set()
            if se_uuid not in placed and has:
                if record.group not in group_networks:
                    group = snap["serviceenginegroup"].get(record.group)
                    group_networks[record.group] = set(
                        self._group_data_networks(snap, group) if group else ())
                keep = group_networks[record.group]
            for net_id, network in want.items():
                if net_id not in has:
                    self._start_wiring(snap, record, "attach", net_id, network.name,
                                       network.uuid)
            for net_id, entry in list(has.items()):
                if net_id in want or net_id in keep or (se_uuid, net_id) in plumbed_in:
                    continue
                self._start_wiring(snap, record, "detach", net_id, entry.get("name", net_id),
                                   entry.get("network_ref"))
        # problems of what is no longer asked for go
        for key, problem in list(self.network_errors.items()):
            se_uuid, net_id = key
            if se_uuid not in self.ses or (
                    net_id not in needed.get(se_uuid, {}) if problem["op"] == "attach"
                    else net_id not in self.se_networks.get(se_uuid, {})):
                del self.network_errors[key]
        if changed:
            self._save_se_networks()

    def _start_wiring(self, snap, record: SeRecord, op: str, net_id: str, name: str,
                      network_ref: str | None) -> None:
        key = (record.uuid, net_id)
        if key in self._wiring:
            return  # one call at a time per SE and network; the other op waits for it
        problem = self.network_errors.get(key)
        if problem is not None and problem["op"] == op:
            backoff = min(self.NETWORK_RETRY_MAX,
                          self.NETWORK_RETRY_DELAY * 2 ** (problem["failures"] - 1))
            if time.monotonic() - problem["at"] < backoff:
                return
        try:
            driver = self._driver_for(snap, record.group)
        except CloudError as exc:
            self._network_failed(key, record, op, name, exc.reason)
            return
        if driver is None:
            return
        self._wiring[key] = (op, asyncio.get_running_loop().create_task(
            self._wire(driver, record, op, net_id, name, network_ref)))

    async def _wire(self, driver: CloudDriver, record: SeRecord, op: str, net_id: str,
                    name: str, network_ref: str | None) -> None:
        """One attach_network or detach_network call, in a thread."""
        key = (record.uuid, net_id)
        reason = None
        address = None
        try:
            async with self._wiring_slots:
                call = asyncio.ensure_future(asyncio.to_thread(
                    driver.attach_network if op == "attach" else driver.detach_network,
                    record.uuid, net_id))
                done, _ = await asyncio.wait({call}, timeout=self.NETWORK_CALL_TIMEOUT)
                if not done:
                    self._network_failed(key, record, op, name, "the cloud has not answered "
                                         f"in {self.NETWORK_CALL_TIMEOUT:.0f} s; waiting")
                address = await call
        except CloudError as exc:
            reason = exc.reason
        except Exception as exc:  # a driver bug fails this call, not the controller
            LOG.exception("SE %s: %s of network %s failed", record.name, op, name)
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            self._wiring.pop(key, None)
        if reason is not None:
            self._network_failed(key, record, op, name, reason)
            return
        if self.network_errors.pop(key, None) is not None:
            LOG.info("SE %s: network %s %s now", record.name, name,
                     "attached" if op == "attach" else "detached")
        if record.uuid in self.ses:
            networks = self.se_networks.setdefault(record.uuid, {})
            if op == "attach":
                networks[net_id] = {"name": name, "network_ref": network_ref,
                                    "address": address, "since": time.time()}
                LOG.info("SE %s: attached to network %s%s", record.name, name,
                         f" ({address})" if address else "")
            else:
                networks.pop(net_id, None)
                if not networks:
                    del self.se_networks[record.uuid]
                LOG.info("SE %s: detached from network %s", record.name, name)
            self._save_se_networks()
        self.wake()

    def _network_failed(self, key: tuple[str, str], record: SeRecord, op: str, name: str,
                        reason: str) -> None:
        previous = self.network_errors.get(key)
        if previous is None or previous["reason"] != reason:
            LOG.error("SE %s: %s network %s failed: %s", record.name,
                      "attaching" if op == "attach" else "detaching", name, reason)
        failures = previous["failures"] + 1 if previous and previous["op"] == op else 1
        self.network_errors[key] = {"op": op, "network": name, "reason": reason,
                                    "at": time.monotonic(), "failures": failures}

    def _se_networks_view(self, se_uuid: str) -> list[dict[str, Any]]:
        """The SE's data networks for its runtime: attached ones, calls under way, failures."""
        view: dict[str, dict[str, Any]] = {
            net_id: {"network": net_id, **entry, "state": "attached"}
            for net_id, entry in self.se_networks.get(se_uuid, {}).items()}
        for (se, net_id), (op, _task) in self._wiring.items():
            if se == se_uuid:
                view.setdefault(net_id, {"network": net_id})["state"] = op + "ing"
        for (se, net_id), problem in self.network_errors.items():
            if se == se_uuid:
                item = view.setdefault(net_id, {"network": net_id, "name": problem["network"]})
                item.setdefault("state", problem["op"] + "_failed")
                item["reason"] = f"{problem['op']} failed: {problem['reason']}"
        return [view[k] for k in sorted(view)]

    def _network_problem(self, vs_uuid: str, where: placement.VsPlacement | None) -> str | None:
        """Why SEs of a virtual service lack an interface in its VIPs' networks, if they do."""
        networks = self._vs_networks.get(vs_uuid)
        if not networks or where is None:
            return None
        problems = []
        for se_uuid in (*where.active, *([where.standby] if where.standby else [])):
            for net_id in sorted(networks):
                problem = self.network_errors.get((se_uuid, net_id))
                if problem is not None and problem["op"] == "attach":
                    record = self.ses.get(se_uuid)
                    problems.append(f"SE {record.name if record else se_uuid}: attaching "
                                    f"network {problem['network']!r} failed: "
                                    f"{problem['reason']}")
        return "; ".join(problems) or None

    def _load_se_networks(self) -> dict[str, dict[str, dict[str, Any]]]:
        try:
            saved = json.loads(self.se_networks_file.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(saved, dict):
            return {}
        return {se: {net: entry for net, entry in networks.items() if isinstance(entry, dict)}
                for se, networks in saved.items() if isinstance(networks, dict)}

    def _save_se_networks(self) -> None:
        # a few hundred bytes per SE, written on the loop: no two writers race on the file
        tmp = self.se_networks_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.se_networks, sort_keys=True))
        tmp.replace(self.se_networks_file)

    # documents -----------------------------------------------------------------------------

    def _documents(self, snap, result: placement.PlacementResult
                   ) -> dict[str, tuple[str, dict[str, Any]]]:
        per_se: dict[str, list[str]] = {}
        for vs_uuid, where in result.placements.items():
            # a standby gets the virtual service when placement promotes it: until then it
            # must not answer for the VIP
            for se in where.active:
                per_se.setdefault(se, []).append(vs_uuid)
        docs = {}
        sections = self._scaleout_sections(snap, result)
        for se_uuid in self.ses:
            document = build_se_document(snap, sorted(per_se.get(se_uuid, [])),
                                         self.secrets_of, withheld=self.vip_withheld,
                                         scaleout_section=sections.get(se_uuid))
            encoded = json.dumps(document, sort_keys=True).encode()
            version = hashlib.sha256(encoded).hexdigest()[:16]
            docs[se_uuid] = (version, document)
        return docs

    def _scaleout_sections(self, snap, result: placement.PlacementResult
                           ) -> dict[str, dict[str, Any]]:
        """The `scaleout` section of each SE (vantage.controller.scaleout): a secondary takes
        new flows once it is alive, serves the virtual service (its applied document has it)
        and, with an asymmetric return path, holds the VIP."""
        pairs: dict[str, list[tuple[str, int]]] = {}
        paths: dict[str, ReturnPath] = {}
        for vs_uuid, where in result.placements.items():
            vs = snap["virtualservice"].get(vs_uuid)
            vsvip = snap["vsvip"].get(vs.body.get("vsvip_ref") or "") if vs else None
            if len(where.active) < 2 or vsvip is None:
                continue
            vips = [(v.get("ip_address") or {}).get("addr") for v in vsvip.body.get("vip", [])
                    if v.get("enabled", True) and (v.get("ip_address") or {}).get("addr")
                    and (vsvip.uuid, str(v.get("vip_id", "0"))) not in self.vip_withheld]
            pairs[vs_uuid] = scaleout.listen_pairs(vs.body, vips)
            paths[vs_uuid] = self._return_path(snap, vs) or ReturnPath.ASYMMETRIC
        if not pairs:
            return {}
        interfaces = {se: session.interfaces for se, session in self.semanager.sessions.items()}

        def ready(se_uuid: str, vs_uuid: str, vip: str) -> bool:
            serving = self.se_serving.get(se_uuid, (None, frozenset()))[1]
            if not self.semanager.is_alive(se_uuid) or vs_uuid not in serving:
                return False
            return paths[vs_uuid] == ReturnPath.SYMMETRIC or \
                self.plumbed.get((se_uuid, vip)) is False

        return scaleout.se_sections(result.placements, pairs, paths, interfaces, ready)

    def _update_runtime(self, snap, result, docs, now: float) -> None:
        # what each SE serves: the virtual services of the last document it applied. While a
        # newer document is on its way, those keep serving (a change to one virtual service
        # does not make the others on the SE look down)
        for se_uuid, (version, document) in docs.items():
            session = self.semanager.sessions.get(se_uuid)
            if session is not None and session.applied_version == version:
                self.se_serving[se_uuid] = (version, frozenset(
                    vs["uuid"] for vs in document.get("virtualservice", [])
                    if vs["uuid"] not in session.rejected_vs))
        for se_uuid in set(self.se_serving) - set(docs):
            del self.se_serving[se_uuid]
        for vs_uuid, vs in snap["virtualservice"].items():
            runtime = self.vs_runtime.setdefault(vs_uuid, VsRuntime())
            vsvip = snap["vsvip"].get(vs.body.get("vsvip_ref") or "")
            runtime.vip = [(v.get("ip_address") or {}).get("addr") for v in
                           (vsvip.body.get("vip", []) if vsvip else [])
                           if (v.get("ip_address") or {}).get("addr")
                           and (vsvip.uuid, str(v.get("vip_id", "0"))) not in self.vip_withheld]
            vip_problem = "; ".join(self.vip_problems.get(vsvip.uuid, [])) if vsvip else None
            path = self._return_path(snap, vs)
            runtime.return_path = path.value if path is not None else None
            where = result.placements.get(vs_uuid)
            ses = []
            serving = 0
            rejection = None
            if where is not None:
                for index, se in enumerate((*where.active, *([where.standby] if where.standby
                                                             else []))):
                    record = self.ses.get(se)
                    session = self.semanager.sessions.get(se)
                    version = docs.get(se, ("", {}))[0]
                    applied = session is not None and session.applied_version == version
                    rejected = self.se_rejections.get(se)
                    if rejected and rejected["version"] == version:
                        rejection = f"SE {record.name if record else se}: {rejected['error']}"
                    # the SE applied the document except this virtual service
                    refused = session.rejected_vs.get(vs_uuid) if applied else None
                    if refused:
                        rejection = f"SE {record.name if record else se}: {refused}"
                        applied = False
                    primary = index == 0
                    standby = where.standby == se
                    alive = self.semanager.is_alive(se)
                    served_version, served = self.se_serving.get(se, (None, frozenset()))
                    still = (session is not None and not refused and vs_uuid in served
                             and session.applied_version == served_version)
                    if alive and (applied or still) and not standby:
                        serving += 1
                    ses.append({"se_ref": se, "se_name": record.name if record else se,
                                "primary": primary, "standby": standby,
                                "connected": alive, "config_applied": applied,
                                "state": record.state if record else "unknown"})
            runtime.service_engines = ses
            if not vs.body.get("enabled", True):
                state, reason = "OPER_DISABLED", "virtual service disabled"
            elif vip_problem and not runtime.vip:
                state, reason = "OPER_DOWN", vip_problem
            elif rejection:
                state, reason = "OPER_DOWN", f"configuration rejected by {rejection}"
            elif serving:
                state, reason = ("OPER_UP", result.unplaced.get(vs_uuid))
                if serving < len([s for s in ses if not s["standby"]]):
                    state = "OPER_PARTITIONED" if vs_uuid in result.unplaced else "OPER_UP"
            elif vs_uuid in result.unplaced and "no capacity" in result.unplaced[vs_uuid]:
                state, reason = "OPER_RESOURCES", result.unplaced[vs_uuid]
            elif ses:
                state, reason = "OPER_DOWN", "waiting for SE " + ", ".join(
                    s["se_name"] for s in ses if not s["config_applied"] or not s["connected"])
            else:
                state, reason = "OPER_DOWN", result.unplaced.get(vs_uuid, "not placed")
            if vip_problem and reason != vip_problem and state != "OPER_DISABLED":
                # some VIPs serve, another has no usable address: say so
                reason = f"{reason}; {vip_problem}" if reason else vip_problem
            network_problem = self._network_problem(vs_uuid, where)
            if network_problem and state != "OPER_DISABLED":
                # an SE lacks its interface in a VIP's network: the VIP is not plumbed there
                reason = f"{reason}; {network_problem}" if reason else network_problem
            if state != runtime.oper_status:
                runtime.since = now
                LOG.info("virtual service %s: %s%s", vs.name, state, f" ({reason})" if reason else "")
            runtime.oper_status, runtime.reason = state, reason
        for vs_uuid in list(self.vs_runtime):
            if vs_uuid not in snap["virtualservice"]:
                del self.vs_runtime[vs_uuid]

    # clouds ------------------------------------------------------------------------------

    #: seconds between two checks of a cloud (credentials, networks)
    CLOUD_SYNC_INTERVAL = 60.0

    def _sync_clouds(self, snap) -> None:
        """Check each cloud's configuration and credentials and discover its networks, in the
        background (a slow or unreachable cloud never holds the loop). A cloud is checked
        again after CLOUD_SYNC_INTERVAL, or at once when its object changes."""
        now = time.monotonic()
        for uuid, cloud in snap["cloud"].items():
            state = self.cloud_state.setdefault(uuid, {"checked": 0.0, "version": None,
                                                       "task": None})
            task = state["task"]
            if task is not None and not task.done():
                continue
            if state["version"] == cloud.last_modified and \
                    now - state["checked"] < self.CLOUD_SYNC_INTERVAL:
                continue
            state["checked"] = now
            state["version"] = cloud.last_modified
            state["task"] = asyncio.get_running_loop().create_task(self._sync_cloud(cloud))
        for uuid in set(self.cloud_state) - set(snap["cloud"]):
            self.cloud_state.pop(uuid)

    async def _sync_cloud(self, cloud: StoredObject) -> None:
        state = self.cloud_state.get(cloud.uuid)
        try:
            driver = self.drivers.get(cloud.uuid) or self.make_driver(cloud)
            self.drivers[cloud.uuid] = driver
            await asyncio.to_thread(driver.validate)
            networks = await asyncio.to_thread(driver.discover_networks)
            added = await asyncio.to_thread(self._store_networks, cloud, list(networks))
        except CloudError as exc:
            if state is not None:
                if state.get("reason") != exc.reason:
                    LOG.error("cloud %s: %s", cloud.name, exc.reason)
                state.update(status="CLOUD_STATE_FAILED", reason=exc.reason)
            return
        except Exception as exc:  # a driver bug must not stop the loop
            LOG.exception("cloud %s: check failed", cloud.name)
            if state is not None:
                state.update(status="CLOUD_STATE_FAILED", reason=f"{type(exc).__name__}: {exc}")
            return
        if state is not None:
            state.update(status="CLOUD_STATE_PLACEMENT_READY", reason=None,
                         networks=len(networks), last_sync=time.time())
        if added:
            LOG.info("cloud %s: discovered %d new network(s)", cloud.name, added)

    def _store_networks(self, cloud: StoredObject, networks) -> int:
        """`network` objects for what the cloud offers (new ones only; an existing network,
        which the admin may have given static ranges, is left as it is)."""
        from vantage.controller.objects import new_uuid
        from vantage.model.network import Network
        added = 0
        with self.store.begin(write=True) as tx:
            existing = {(o.body.get("cloud_ref"), o.name)
                        for o in tx.list("network", None, limit=None)[1]}
            for net in networks:
                if (cloud.uuid, net.name) in existing:
                    continue
                body = {"name": net.name, "cloud_ref": cloud.uuid,
                        "external_uuid": net.external_id, "configured_subnets": []}
                for cidr in net.subnets:
                    ip, _, mask = cidr.partition("/")
                    body["configured_subnets"].append(
                        {"prefix": {"ip_addr": {"addr": ip}, "mask": int(mask or 32)}})
                try:
                    Network.model_validate(body)
                except ValueError as exc:
                    LOG.warning("cloud %s: network %s not recorded: %s", cloud.name, net.name,
                                exc)
                    continue
                tx.insert(StoredObject(uuid=new_uuid("network"), kind="network",
                                       tenant=cloud.tenant, name=net.name, body=body),
                          [("cloud_ref", cloud.uuid)])
                added += 1
        return added

    def cloud_runtime(self, cloud_uuid: str, cloud: dict[str, Any]) -> dict[str, Any]:
        """The cloud's driver, the return path it records, and whether it is usable."""
        runtime: dict[str, Any] = {"uuid": cloud_uuid, "name": cloud.get("name"),
                                   "vtype": cloud.get("vtype")}
        driver = self.drivers.get(cloud_uuid)
        try:
            if driver is None:
                with self.store.begin() as tx:
                    stored = tx.get(cloud_uuid)
                driver = self.drivers[cloud_uuid] = self.make_driver(stored)
        except CloudError as exc:
            return {**runtime, "state": "CLOUD_STATE_FAILED", "reason": exc.reason}
        ses = [r for r in self.ses.values()
               if (self._group_cloud(r.group) or "") == cloud_uuid]
        checked = self.cloud_state.get(cloud_uuid, {})
        return {**runtime, "state": checked.get("status", "CLOUD_STATE_IN_PROGRESS"),
                "reason": checked.get("reason"),
                "driver": f"{type(driver).__module__}.{type(driver).__name__}",
                "return_path": driver.return_path().value,
                "networks_discovered": checked.get("networks"),
                "last_sync": checked.get("last_sync"),
                "service_engines": len(ses),
                "last_se_create_failure": self.se_create_failures.get(cloud_uuid)}

    def _group_cloud(self, group_uuid: str) -> str | None:
        with self.store.begin() as tx:
            group = tx.get(group_uuid) if group_uuid else None
        return group.body.get("cloud_ref") if group else None

    def se_runtime(self, se_uuid: str) -> dict[str, Any] | None:
        record = self.ses.get(se_uuid)
        if record is None:
            return None
        session = self.semanager.sessions.get(se_uuid)
        version = self.se_docs.get(se_uuid, ("", {}))[0]
        return {"uuid": se_uuid, "name": record.name, "state": record.state,
                "reason": record.reason, "connected": session is not None,
                "alive": self.semanager.is_alive(se_uuid),
                "desired_version": version,
                "applied_version": session.applied_version if session else None,
                "rejected": self.se_rejections.get(se_uuid),
                "hostname": session.hostname if session else None,
                "pid": session.pid if session else None,
                "virtualservices": [vs for vs, p in self.placements.items()
                                    if se_uuid in p.active or p.standby == se_uuid],
                "data_networks": self._se_networks_view(se_uuid),
                "servers": session.servers if session else {}}


def _cloud_network_id(cloud: StoredObject | None, network: StoredObject) -> str:
    """How a cloud's driver names a network in SeSpec and attach_network: OpenStack takes a
    Neutron ID (or a name, which may be ambiguous); vCenter a port group name (its
    `external_uuid` is a moref the driver does not look up); a Linux server an interface
    name or "<host_ip>/<interface>", which discovered networks carry as both."""
    if cloud is not None and cloud.body.get("vtype") == "CLOUD_OPENSTACK":
        return network.body.get("external_uuid") or network.name
    return network.name


def _configured_mgmt_network(cloud: StoredObject) -> str | None:
    """The management network a cloud's configuration names (used by SE groups without
    `mgmt_network_ref`)."""
    body = cloud.body
    if body.get("vtype") == "CLOUD_OPENSTACK":
        return (body.get("openstack_configuration") or {}).get("mgmt_network_name")
    if body.get("vtype") == "CLOUD_VCENTER":
        return (body.get("vcenter_configuration") or {}).get("management_network")
    return None


def _se_extra(group: dict[str, Any]) -> dict[str, Any]:
    """SeSpec.extra: the SE group's cloud-specific fields, under the keys drivers read
    (OpenStack: `flavor` over the cloud's flavor, `availability_zones` over the cloud's)."""
    extra: dict[str, Any] = {}
    if group.get("instance_flavor"):
        extra["flavor"] = group["instance_flavor"]
    if group.get("openstack_availability_zones"):
        extra["availability_zones"] = list(group["openstack_availability_zones"])
    return extra


def _ranges_text(candidates) -> str:
    return ", ".join(f"{begin}-{end}" for begin, end, _ in candidates)


def _refs_named(body: Any, field: str) -> set[str]:
    """Every value of `field` anywhere in a nested object body."""
    found: set[str] = set()
    if isinstance(body, dict):
        for key, value in body.items():
            if key == field and isinstance(value, str):
                found.add(value)
            else:
                found |= _refs_named(value, field)
    elif isinstance(body, list):
        for item in body:
            found |= _refs_named(item, field)
    return found


def _group_spec(obj: StoredObject) -> placement.GroupSpec:
    b = obj.body
    spec = placement.GroupSpec(
        uuid=obj.uuid, name=obj.name, ha_mode=b.get("ha_mode", placement.SHARED),
        algo=b.get("algo", placement.PACKED),
        min_scaleout_per_vs=b.get("min_scaleout_per_vs", 1),
        max_scaleout_per_vs=b.get("max_scaleout_per_vs", 4), max_se=b.get("max_se", 10),
        max_vs_per_se=b.get("max_vs_per_se", 10), buffer_se=b.get("buffer_se", 1))
    object.__setattr__(spec, "deprovision_delay", b.get("se_deprovision_delay", 120))
    return spec


def _buffer_needed(group: placement.GroupSpec, result: placement.PlacementResult,
                   ses: dict[str, SeRecord]) -> int:
    """How many idle SEs the group keeps as N+M buffer."""
    if group.ha_mode == placement.ACTIVE_STANDBY:
        return 2
    busy = {se for p in result.placements.values() for se in p.active}
    in_use = len([r for r in ses.values() if r.group == group.uuid and r.uuid in busy])
    return group.buffer_se if in_use else 0


def build_se_document(snap: dict[str, dict[str, StoredObject]], vs_uuids: list[str],
                      secrets_of: Callable[[StoredObject], dict[str, str]] = lambda o: {},
                      withheld: Collection[tuple[str, str]] = (),
                      scaleout_section: dict[str, Any] | None = None) -> dict[str, Any]:
    """The SE configuration document for these virtual services: the objects they use, with
    references as UUIDs (docs/se-config.md). VIPs in `withheld` ((vsvip uuid, vip_id): their
    address was refused) go without their address, so no SE serves them. `scaleout_section`,
    if any, is the SE's scale-out data path (vantage.controller.scaleout), under `scaleout`."""
    wanted: dict[str, set[str]] = {kind: set() for kind in SE_DOC_KINDS}
    for vs_uuid in vs_uuids:
        vs = snap["virtualservice"][vs_uuid]
        wanted["virtualservice"].add(vs_uuid)
        body = vs.body
        for field, kind in (("vsvip_ref", "vsvip"), ("pool_ref", "pool"),
                            ("application_profile_ref", "applicationprofile"),
                            ("network_profile_ref", "networkprofile")):
            if body.get(field):
                wanted[kind].add(body[field])
        if body.get("ssl_profile_ref"):
            wanted["sslprofile"].add(body["ssl_profile_ref"])
        wanted["sslkeyandcertificate"].update(body.get("ssl_key_and_certificate_refs", []))
        pools = {body.get("pool_ref")} if body.get("pool_ref") else set()
        for item in body.get("http_policies", []):
            policy_set = snap["httppolicyset"].get(item.get("http_policy_set_ref") or "")
            if policy_set is not None:
                wanted["httppolicyset"].add(policy_set.uuid)
                pools.update(_refs_named(policy_set.body, "pool_ref"))
        for pool_uuid in pools:
            pool = snap["pool"].get(pool_uuid)
            if pool is None:
                continue
            wanted["pool"].add(pool_uuid)
            wanted["healthmonitor"].update(pool.body.get("health_monitor_refs", []))
            if pool.body.get("ssl_profile_ref"):
                wanted["sslprofile"].add(pool.body["ssl_profile_ref"])
            if pool.body.get("application_persistence_profile_ref"):
                wanted["applicationpersistenceprofile"].add(
                    pool.body["application_persistence_profile_ref"])
    document: dict[str, Any] = {}
    for kind in SE_DOC_KINDS:
        items = []
        for uuid in sorted(wanted[kind]):
            obj = snap[kind].get(uuid)
            if obj is None:
                continue
            body = {k: v for k, v in obj.body.items() if k not in _META}
            if obj.secrets:
                # private keys travel to the SE over the encrypted, authenticated channel
                body.update(secrets_of(obj))
            body["uuid"] = obj.uuid
            body["name"] = obj.name
            if kind == "virtualservice":
                # the SE does not place: these fields belong to the controller
                for field in ("se_group_ref", "cloud_ref"):
                    body.pop(field, None)
            if kind == "pool":
                body.pop("cloud_ref", None)
            if kind == "vsvip":
                body.pop("cloud_ref", None)
                body["vip"] = [{k: v for k, v in vip.items()
                                if k not in ("network_ref", "subnet_uuid", "floating_ip")
                                and not (k == "ip_address" and (obj.uuid, str(
                                    vip.get("vip_id", "0"))) in withheld)}
                               for vip in body.get("vip", [])]
            items.append(body)
        if items:
            document[kind] = items
    if scaleout_section:
        document["scaleout"] = scaleout_section
    return document


def create_control_plane(conf, store, *, controller_url: str, controller_ca: str | None,
                         objects=None) -> ControlPlane:
    """The control plane with every installed cloud driver; raises DriverLoadError or
    CloudError when a configured cloud's driver is missing or fails to load."""
    from vantage.cloud.loading import driver_classes

    control_plane = ControlPlane(
        conf, store, driver_classes=driver_classes(), controller_url=controller_url,
        controller_ca=controller_ca,
        secrets_of=objects.decrypted_secrets if objects is not None else None)
    control_plane.load_drivers()
    return control_plane


class _ControllerCollector:
    """Prometheus view of the whole deployment: per virtual service counters summed over the
    SEs that serve it, SE liveness, and virtual service oper status."""

    def __init__(self, control_plane: ControlPlane) -> None:
        self.cp = control_plane

    def collect(self):
        names = {}
        with self.cp.store.begin() as tx:
            _, vss = tx.list("virtualservice", None, limit=None)
            names = {vs.uuid: vs.name for vs in vss}
        totals: dict[str, dict[str, Any]] = {}
        for message in self.cp.latest_metrics.values():
            for uuid, c in (message.get("virtualservices") or {}).items():
                t = totals.setdefault(uuid, {"total_conns": 0, "open_conns": 0, "bytes_in": 0,
                                             "bytes_out": 0, "errors": 0,
                                             "responses": [0] * 6})
                for key in ("total_conns", "open_conns", "bytes_in", "bytes_out", "errors"):
                    t[key] += c.get(key, 0)
                t["responses"] = [a + b for a, b in zip(t["responses"],
                                                        c.get("responses", [0] * 6))]
        conns = CounterMetricFamily("vantage_virtualservice_connections",
                                    "Client connections", labels=["vs", "uuid"])
        opened = GaugeMetricFamily("vantage_virtualservice_open_connections",
                                   "Open client connections", labels=["vs", "uuid"])
        responses = CounterMetricFamily("vantage_virtualservice_responses",
                                        "Responses by status class",
                                        labels=["vs", "uuid", "code_class"])
        bytes_in = CounterMetricFamily("vantage_virtualservice_bytes_in", "Bytes from clients",
                                       labels=["vs", "uuid"])
        bytes_out = CounterMetricFamily("vantage_virtualservice_bytes_out", "Bytes to clients",
                                        labels=["vs", "uuid"])
        for uuid, t in totals.items():
            labels = [names.get(uuid, uuid), uuid]
            conns.add_metric(labels, t["total_conns"])
            opened.add_metric(labels, t["open_conns"])
            bytes_in.add_metric(labels, t["bytes_in"])
            bytes_out.add_metric(labels, t["bytes_out"])
            for index, cls in enumerate(("none", "1xx", "2xx", "3xx", "4xx", "5xx")):
                if t["responses"][index] or cls == "2xx":
                    responses.add_metric(labels + [cls], t["responses"][index])
        up = GaugeMetricFamily("vantage_virtualservice_up", "1 if the virtual service is "
                               "OPER_UP", labels=["vs", "uuid", "state"])
        for uuid, runtime in self.cp.vs_runtime.items():
            up.add_metric([names.get(uuid, uuid), uuid, runtime.oper_status],
                          1 if runtime.oper_status == "OPER_UP" else 0)
        se_up = GaugeMetricFamily("vantage_serviceengine_up", "1 if the SE heartbeats",
                                  labels=["se", "uuid"])
        for record in self.cp.ses.values():
            se_up.add_metric([record.name, record.uuid],
                             1 if self.cp.semanager.is_alive(record.uuid) else 0)
        yield from (conns, opened, responses, bytes_in, bytes_out, up, se_up)
