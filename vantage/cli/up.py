"""`vantage up`: run the controller with embedded defaults in the foreground."""
from __future__ import annotations

import argparse
import os

from cliff import command


def default_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "vantage")


class Up(command.Command):
    """Run a controller on this machine: SQLite store, the local cloud (SEs are local
    processes, VIPs from 127.100.0.0/16) and the default SE group. Stops with Ctrl-C; the SEs
    keep serving and are adopted by the next `vantage up`."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--state-dir", default=default_state_dir(), metavar="DIR",
                            help="Where the database, certificates, secrets and SE state live "
                                 "(default: %(default)s).")
        parser.add_argument("--listen", default="127.0.0.1:9443", metavar="HOST:PORT",
                            help="Address of the REST API (default: %(default)s).")
        parser.add_argument("--netns", action="store_true",
                            help="Run each SE in its own network namespace on a Linux bridge "
                                 "(vantage-br0, 10.231.0.0/24), VIPs plumbed with real ARP "
                                 "(root only; [local_cloud] mode = netns).")
        parser.add_argument("--demo", action="store_true",
                            help="Also start two sample backends and a virtual service 'demo' "
                                 "in front of them, and print how to reach it.")
        return parser

    def take_action(self, args: argparse.Namespace) -> int:
        from vantage.cmd.up import run
        return run(args.state_dir, args.listen, args.demo, self.app.stdout, netns=args.netns)
