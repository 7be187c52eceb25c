"""Configuration: oslo.config option groups, one module per group.

Nothing registers at import time; `build_conf` makes a ConfigOpts with every group registered,
so each process and each test has its own.
"""
from __future__ import annotations

from oslo_config import cfg

from vantage.conf import api, auth, controlplane, database, default, secrets


def register_opts(conf: cfg.ConfigOpts) -> None:
    for module in (default, api, auth, database, secrets, controlplane):
        module.register_opts(conf)


def build_conf(args: list[str] | None = None, *, default_config_files: list[str] | None = None,
               prog: str = "vantage-controller") -> cfg.ConfigOpts:
    """A fresh ConfigOpts with every Vantage group registered and `args` parsed."""
    conf = cfg.ConfigOpts()
    register_opts(conf)
    conf(args if args is not None else [], project="vantage", prog=prog,
         default_config_files=default_config_files or [])
    return conf
