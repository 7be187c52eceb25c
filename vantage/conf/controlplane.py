"""Options of the controller's control loop: SE health, placement and the local cloud."""
from __future__ import annotations

from oslo_config import cfg

GROUP = "controlplane"

opts = [
    cfg.BoolOpt("enabled", default=True,
                help="Run the control loop (placement, SE creation, configuration push). Turn "
                     "off for an API-only controller."),
    cfg.FloatOpt("se_heartbeat_timeout", default=3.0, min=1.0,
                 help="Seconds without a heartbeat after which an SE is declared down and its "
                      "virtual services move. SEs send one every second, so one late heartbeat "
                      "does not count."),
    cfg.FloatOpt("reconcile_interval", default=0.5, min=0.05,
                 help="Seconds between passes of the control loop when nothing wakes it."),
    cfg.FloatOpt("se_create_timeout", default=60.0, min=5.0,
                 help="Seconds a new SE may take to register before it is replaced."),
    cfg.FloatOpt("bootstrap_token_ttl", default=3600.0, min=60.0,
                 help="Seconds a one-time SE bootstrap token stays valid."),
    cfg.StrOpt("controller_url",
               help="URL SEs use to reach the controller (default: from [api] bind_host and "
                    "bind_port)."),
]

local_cloud_opts = [
    cfg.StrOpt("mode", default="process", choices=[
                   ("process", ("SEs are child processes in the controller's network "
                                "namespace; VIPs are loopback addresses (no root needed)")),
                   ("netns", ("each SE runs in its own network namespace on a Linux bridge; "
                              "VIPs are plumbed with ARP and move with gratuitous ARP (root)"))],
               help="How the local cloud runs its Service Engines."),
    cfg.StrOpt("vip_network", default="127.100.0.0/16",
               help="Loopback range the local cloud allocates VIPs from (process mode)."),
    cfg.StrOpt("bridge", default="vantage-br0",
               help="Linux bridge the SE namespaces attach to (netns mode); created if missing. "
                    "At most 15 characters."),
    cfg.StrOpt("netns_network", default="10.231.0.0/24",
               help="IPv4 network of the bridge (netns mode): the bridge has its first address "
                    "(SEs reach the controller there), SEs get addresses from the lower half, "
                    "VIPs are allocated from the upper half. Pick a range no other network of "
                    "this host uses."),
    cfg.ListOpt("se_extra_args", default=[],
                help="Extra command-line arguments for the `vantage-se` processes of the "
                     "local cloud."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(opts, group=GROUP)
    conf.register_opts(local_cloud_opts, group="local_cloud")


def list_opts():
    return [(GROUP, opts), ("local_cloud", local_cloud_opts)]
